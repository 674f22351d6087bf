# %post of hostwatch-aggregator: the state directory, the unit enabled on a first install, and
# started when systemd is running (an upgrade restarts it in %postun). $1 is the number
# of versions installed after this one: 1 on a first install.
if [ ! -d /var/lib/hostwatch ]; then
    install -d -o hostwatch -g hostwatch -m 0750 /var/lib/hostwatch
fi
if [ "$1" -eq 1 ]; then
    # Works offline (in a chroot) too: it only creates the symlinks.
    systemctl --no-reload enable hostwatch-aggregator.service >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl start hostwatch-aggregator.service >/dev/null 2>&1 || :
    fi
fi
exit 0
