# %preun of hostwatch-agent: on erase ($1 = 0, no version left), stop and disable the unit.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable hostwatch-agent.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop hostwatch-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
