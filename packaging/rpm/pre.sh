# %pre of hostwatch-agent and hostwatch-aggregator: the system user both run as.
if ! getent group hostwatch >/dev/null; then
    groupadd --system hostwatch
fi
if ! getent passwd hostwatch >/dev/null; then
    useradd --system --gid hostwatch --home-dir /var/lib/hostwatch --no-create-home \
        --shell /sbin/nologin --comment "hostwatch agent and aggregator" hostwatch
fi
exit 0
