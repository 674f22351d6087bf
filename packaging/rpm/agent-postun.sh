# %postun of hostwatch-agent: reload systemd, and restart the unit after an upgrade
# ($1 >= 1). /var/lib/hostwatch and the hostwatch user stay after an erase, as RPM
# distributions expect; an edited /etc/hostwatch/agent.toml is kept as .rpmsave.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart hostwatch-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
