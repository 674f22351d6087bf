# %preun of hostwatch-aggregator: on erase ($1 = 0, no version left), stop and disable the unit.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable hostwatch-aggregator.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop hostwatch-aggregator.service >/dev/null 2>&1 || :
    fi
fi
exit 0
