//! The host probe: load averages, core counts, memory and per-mount disk usage, read
//! directly from `/proc` and `statvfs(2)`.
//!
//! Direct reads on purpose: measured on the project's machine, the general-purpose crates
//! (sysinfo, procfs) cost 2-3× a direct read, and the agent's budget is 1.5×. The parsers
//! are pure functions over the files' text so they are tested with fixtures; [`HostProbe`]
//! adds only the reads, reusing one buffer between samples.
//!
//! It deliberately does not decide what is unhealthy (the aggregator does), nor round the
//! way `df` prints: it reports `df`'s numbers unrounded.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, SystemTime};

use proto::v1::{DiskUsage, HostSample, sample};
use serde::Serialize;

use super::{Collected, Collecting, Probe, ProbeError};
use crate::AgentError;
use crate::config::{AgentConfig, HostConfig};

/// The host probe: always one, every `[host] interval`.
pub(crate) fn probes(config: &AgentConfig) -> Result<Vec<Box<dyn Probe>>, AgentError> {
    let probe: Box<dyn Probe> = Box::new(HostProbe::new(&config.host)?);
    Ok(vec![probe])
}

const LOADAVG_PATH: &str = "/proc/loadavg";
const MEMINFO_PATH: &str = "/proc/meminfo";
const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";
const CPUINFO_PATH: &str = "/proc/cpuinfo";

/// Filesystem types that never hold user data: kernel interfaces, memory-backed and
/// read-only image filesystems, container layers. `host.fs_types_exclude` adds to these.
pub const PSEUDO_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Load averages as in `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// `MemTotal` and `MemAvailable`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl Memory {
    /// 100 × (1 − available ÷ total), clamped to [0, 100].
    pub fn used_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        let used = 1.0 - self.available_bytes as f64 / self.total_bytes as f64;
        (used * 100.0).clamp(0.0, 100.0)
    }
}

/// Core counts, from `/proc/cpuinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreCount {
    /// Unique (physical id, core id) pairs, or `logical` when the host reports none.
    pub physical: u32,
    /// `processor` entries: the logical CPUs online.
    pub logical: u32,
    /// True when `physical` is the logical count because no topology was reported.
    pub estimated: bool,
}

/// One line of `/proc/self/mountinfo`, with its escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry<'a> {
    /// `major:minor` of the mounted device; bind mounts of one filesystem share it.
    pub device_id: &'a str,
    /// The directory of the filesystem mounted here: `/` unless this is a bind mount of a
    /// subdirectory.
    pub root: Cow<'a, [u8]>,
    /// Raw bytes: a mount point need not be UTF-8, and statvfs needs the exact path.
    pub mount_point: Cow<'a, [u8]>,
    pub fs_type: Cow<'a, str>,
    /// The mount source, e.g. `/dev/vda`.
    pub source: Cow<'a, str>,
}

impl MountEntry<'_> {
    fn mount_point_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.mount_point)
    }
}

/// Which mounts to report: the built-in pseudo filesystems and the configured lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountFilter {
    pub mounts_include: Vec<String>,
    pub mounts_exclude: Vec<String>,
    pub fs_types_exclude: Vec<String>,
}

impl MountFilter {
    pub fn from_config(config: &HostConfig) -> MountFilter {
        MountFilter {
            mounts_include: config.mounts_include.clone(),
            mounts_exclude: config.mounts_exclude.clone(),
            fs_types_exclude: config.fs_types_exclude.clone(),
        }
    }

    fn wants(&self, entry: &MountEntry<'_>) -> bool {
        let fs_type = entry.fs_type.as_ref();
        if PSEUDO_FS_TYPES.contains(&fs_type) || self.fs_types_exclude.iter().any(|t| t == fs_type)
        {
            return false;
        }
        let mount_point = entry.mount_point.as_ref();
        if !self.mounts_include.is_empty()
            && !self
                .mounts_include
                .iter()
                .any(|m| m.as_bytes() == mount_point)
        {
            return false;
        }
        !self
            .mounts_exclude
            .iter()
            .any(|m| m.as_bytes() == mount_point)
    }
}

/// The numbers of `statvfs(2)` the probe uses, in blocks of `fragment_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
}

impl FsStats {
    fn from_statvfs(stat: &rustix::fs::StatVfs) -> FsStats {
        FsStats {
            fragment_size: stat.f_frsize,
            blocks: stat.f_blocks,
            blocks_free: stat.f_bfree,
            blocks_available: stat.f_bavail,
            files: stat.f_files,
            files_free: stat.f_ffree,
        }
    }

    /// Used share as `df` computes it: used ÷ (used + available) × 100 with
    /// used = total − free. Blocks reserved for root count as neither.
    pub fn used_percent(&self) -> f64 {
        let used = self.blocks.saturating_sub(self.blocks_free);
        let denominator = used as f64 + self.blocks_available as f64;
        if denominator == 0.0 {
            0.0
        } else {
            (used as f64 * 100.0 / denominator).min(100.0)
        }
    }

    fn disk_usage(&self, mount: &ReportedMount) -> DiskUsage {
        DiskUsage {
            mount: mount.mount.clone(),
            device: mount.device.clone(),
            fs_type: mount.fs_type.clone(),
            total_bytes: to_i64(self.blocks.saturating_mul(self.fragment_size)),
            available_bytes: to_i64(self.blocks_available.saturating_mul(self.fragment_size)),
            used_percent: self.used_percent(),
            inodes_total: to_i64(self.files),
            inodes_free: to_i64(self.files_free),
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Parses `/proc/loadavg`: `0.84 0.60 0.25 1/84 5544`.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ProbeError> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |name: &str| -> Result<f64, ProbeError> {
        let field = fields.next().ok_or_else(|| ProbeError::Parse {
            path: LOADAVG_PATH,
            message: format!("missing {name}"),
        })?;
        field
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ProbeError::Parse {
                path: LOADAVG_PATH,
                message: format!("{name}: {field:?} is not a load"),
            })
    };
    Ok(LoadAvg {
        load1: next("load1")?,
        load5: next("load5")?,
        load15: next("load15")?,
    })
}

/// Parses `MemTotal` and `MemAvailable` out of `/proc/meminfo` (values in kB).
pub fn parse_meminfo(text: &str) -> Result<Memory, ProbeError> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let value = parts.next().and_then(|v| v.parse::<u64>().ok());
        let bytes = match (value, parts.next()) {
            (Some(kib), Some("kB")) => kib.saturating_mul(1024),
            (Some(bytes), None) => bytes,
            _ => {
                return Err(ProbeError::Parse {
                    path: MEMINFO_PATH,
                    message: format!("{key}: cannot read {:?}", rest.trim()),
                });
            }
        };
        *slot = Some(bytes);
        if total.is_some() && available.is_some() {
            break;
        }
    }
    let missing = |name: &str| ProbeError::Parse {
        path: MEMINFO_PATH,
        message: format!("no {name}"),
    };
    let total_bytes = total.ok_or_else(|| missing("MemTotal"))?;
    let available_bytes = available.ok_or_else(|| missing("MemAvailable"))?;
    if total_bytes == 0 {
        return Err(ProbeError::Parse {
            path: MEMINFO_PATH,
            message: "MemTotal is 0".to_owned(),
        });
    }
    Ok(Memory {
        total_bytes,
        available_bytes,
    })
}

/// Counts logical CPUs and unique (physical id, core id) pairs in `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> CoreCount {
    let mut logical: u32 = 0;
    let mut cores: BTreeSet<(&str, &str)> = BTreeSet::new();
    // The ids of the processor entry being read; entries start with their `processor` line.
    let mut physical_id: Option<&str> = None;
    let mut core_id: Option<&str> = None;
    for line in text.lines().chain(std::iter::once("processor : end")) {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => {
                if let (Some(p), Some(c)) = (physical_id.take(), core_id.take()) {
                    cores.insert((p, c));
                }
                logical += 1;
            }
            "physical id" => physical_id = Some(value.trim()),
            "core id" => core_id = Some(value.trim()),
            _ => {}
        }
    }
    // The sentinel line above closed the last entry but is no processor.
    logical -= 1;
    if logical == 0 {
        // Some architectures list CPUs differently; the scheduler's view is the best left.
        logical = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    }
    match u32::try_from(cores.len()) {
        Ok(physical) if physical > 0 => CoreCount {
            physical,
            logical,
            estimated: false,
        },
        _ => CoreCount {
            physical: logical,
            logical,
            estimated: true,
        },
    }
}

/// Parses `/proc/self/mountinfo`, skipping lines it cannot read.
///
/// Format (proc(5)): `id parent major:minor root mount_point options [optional...] - fs_type
/// source super_options`; mount point, fs type and source escape space, tab, newline and
/// backslash as `\ooo` octal.
pub fn parse_mountinfo(text: &str) -> impl Iterator<Item = MountEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(' ');
        let device_id = fields.nth(2)?;
        let root = fields.next()?;
        let mount_point = fields.next()?;
        // Skip the options and the optional fields up to the separator.
        fields.by_ref().find(|field| *field == "-")?;
        let fs_type = fields.next()?;
        let source = fields.next()?;
        Some(MountEntry {
            device_id,
            root: unescape(root),
            mount_point: unescape(mount_point),
            fs_type: lossy(unescape(fs_type)),
            source: lossy(unescape(source)),
        })
    })
}

/// The mounts worth reporting, in mountinfo order: pseudo filesystems and filtered mount
/// points skipped, and of several mounts of one device (bind mounts) only one: a mount of
/// the filesystem's root before a bind mount of a subdirectory, then the shortest mount
/// point, then the first.
pub fn select_mounts<'a>(
    entries: impl Iterator<Item = MountEntry<'a>>,
    filter: &MountFilter,
) -> Vec<MountEntry<'a>> {
    let mut selected: Vec<MountEntry<'a>> = Vec::new();
    let mut index_by_device: HashMap<&'a str, usize> = HashMap::new();
    for entry in entries.filter(|entry| filter.wants(entry)) {
        match index_by_device.get(entry.device_id) {
            Some(&idx) => {
                if bind_rank(&entry) < bind_rank(&selected[idx]) {
                    selected[idx] = entry;
                }
            }
            None => {
                index_by_device.insert(entry.device_id, selected.len());
                selected.push(entry);
            }
        }
    }
    selected
}

/// Lower is preferred among mounts of one device.
fn bind_rank(entry: &MountEntry<'_>) -> (bool, usize) {
    (entry.root.as_ref() != b"/", entry.mount_point.len())
}

/// Decodes mountinfo's `\ooo` octal escapes.
fn unescape(field: &str) -> Cow<'_, [u8]> {
    let bytes = field.as_bytes();
    if !bytes.contains(&b'\\') {
        return Cow::Borrowed(bytes);
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let octal = bytes.get(idx + 1..idx + 4).filter(|digits| {
            bytes[idx] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        });
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                decoded.push(u8::try_from(value).unwrap_or(b'?'));
                idx += 4;
            }
            None => {
                decoded.push(bytes[idx]);
                idx += 1;
            }
        }
    }
    Cow::Owned(decoded)
}

fn lossy(bytes: Cow<'_, [u8]>) -> Cow<'_, str> {
    match bytes {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn read_into(path: &'static str, buf: &mut String) -> Result<(), ProbeError> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_string(buf))
        .map(|_| ())
        .map_err(|source| ProbeError::Read { path, source })
}

/// A `/proc` file kept open and re-read from offset 0 with `pread`: procfs generates the
/// text afresh for a read at offset 0, so one sample costs one syscall where open, read to
/// the end and close cost seven (with `fcntl`, `fstat` and `lseek`), each a path lookup
/// and a buffer allocation in the kernel too. A file that cannot be opened or read is
/// opened again at the next sample.
#[derive(Debug)]
struct ProcFile {
    path: &'static str,
    file: Option<std::fs::File>,
}

impl ProcFile {
    fn new(path: &'static str) -> ProcFile {
        ProcFile { path, file: None }
    }

    /// Replaces `buf` with the file's current text.
    fn read(&mut self, buf: &mut String) -> Result<(), ProbeError> {
        let path = self.path;
        let file = match &self.file {
            Some(file) => file,
            None => self.file.insert(
                std::fs::File::open(path).map_err(|source| ProbeError::Read { path, source })?,
            ),
        };
        let read = read_from_start(file, buf);
        if read.is_err() {
            self.file = None;
        }
        read.map_err(|source| ProbeError::Read { path, source })
    }
}

/// Reads `file` from offset 0 into `buf` with as few `pread`s as its size allows: a read
/// that does not fill the buffer is the end (procfs's seq files hand over all they have
/// left, up to the size asked for), and a full one is followed by another into a larger
/// buffer.
fn read_from_start(file: &std::fs::File, buf: &mut String) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    let mut filled = 0;
    loop {
        bytes.resize(bytes.capacity().max(filled + 4096), 0);
        let n_read = match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(n_read) => n_read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        filled += n_read;
        if n_read == 0 || filled < bytes.len() {
            break;
        }
    }
    bytes.truncate(filled);
    *buf = String::from_utf8(bytes)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))?;
    Ok(())
}

/// Samples the host. Built once: it reads `/proc/cpuinfo` at construction, since the core
/// count does not change while the agent runs, keeps `/proc/loadavg` and `/proc/meminfo`
/// open, and keeps one read buffer for all samples.
#[derive(Debug)]
pub struct HostProbe {
    interval: Duration,
    filter: MountFilter,
    cores: CoreCount,
    buf: String,
    /// Mount points whose statvfs failed last time, so that the warning is logged once.
    failing_mounts: HashSet<String>,
    loadavg: ProcFile,
    meminfo: ProcFile,
    /// Kept open to be told when the mount table changes.
    mountinfo: Option<std::fs::File>,
    /// The mounts to report, as of the last read of the mount table.
    mounts: Vec<ReportedMount>,
    mounts_read: bool,
}

/// A mount the probe reports, owned so it outlives the mountinfo text it came from.
#[derive(Debug, Clone)]
struct ReportedMount {
    /// Raw bytes, for statvfs.
    mount_point: Vec<u8>,
    /// The same, lossily decoded, as reported.
    mount: String,
    device: String,
    fs_type: String,
}

impl ReportedMount {
    fn from_entry(entry: &MountEntry<'_>) -> ReportedMount {
        ReportedMount {
            mount_point: entry.mount_point.to_vec(),
            mount: entry.mount_point_lossy().into_owned(),
            device: entry.source.to_string(),
            fs_type: entry.fs_type.to_string(),
        }
    }
}

impl HostProbe {
    pub fn new(config: &HostConfig) -> Result<HostProbe, ProbeError> {
        let mut buf = String::with_capacity(8 * 1024);
        read_into(CPUINFO_PATH, &mut buf)?;
        let cores = parse_cpuinfo(&buf);
        Ok(HostProbe {
            interval: config.interval,
            filter: MountFilter::from_config(config),
            cores,
            buf,
            failing_mounts: HashSet::new(),
            loadavg: ProcFile::new(LOADAVG_PATH),
            meminfo: ProcFile::new(MEMINFO_PATH),
            mountinfo: std::fs::File::open(MOUNTINFO_PATH).ok(),
            mounts: Vec::new(),
            mounts_read: false,
        })
    }

    pub fn cores(&self) -> CoreCount {
        self.cores
    }

    /// Re-reads the mount table only when it changed: the kernel flags an open
    /// `/proc/self/mountinfo` with POLLPRI when a mount comes or goes, so an unchanged table
    /// costs one `poll` instead of a read and a parse per sample (which would take sampling
    /// well past its budget of 1.5× the bare reads). Without the file, it reads every time.
    fn refresh_mounts(&mut self) -> Result<(), ProbeError> {
        let changed = match &self.mountinfo {
            Some(file) if self.mounts_read => {
                let mut fds = [rustix::event::PollFd::new(
                    file,
                    rustix::event::PollFlags::PRI,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                match rustix::event::poll(&mut fds, Some(&zero)) {
                    Ok(_) => fds[0]
                        .revents()
                        .intersects(rustix::event::PollFlags::PRI | rustix::event::PollFlags::ERR),
                    Err(_) => true,
                }
            }
            _ => true,
        };
        if !changed {
            return Ok(());
        }
        read_into(MOUNTINFO_PATH, &mut self.buf)?;
        self.mounts = select_mounts(parse_mountinfo(&self.buf), &self.filter)
            .iter()
            .map(ReportedMount::from_entry)
            .collect();
        self.mounts_read = true;
        Ok(())
    }

    /// Takes one sample. A mount whose statvfs fails is left out (and logged once); a
    /// failure to read load or memory fails the whole sample.
    pub fn sample(&mut self) -> Result<HostSample, ProbeError> {
        self.loadavg.read(&mut self.buf)?;
        let load = parse_loadavg(&self.buf)?;
        self.meminfo.read(&mut self.buf)?;
        let memory = parse_meminfo(&self.buf)?;
        self.refresh_mounts()?;
        let mut disks = Vec::with_capacity(self.mounts.len());
        for mount in &self.mounts {
            match rustix::fs::statvfs(mount.mount_point.as_slice()) {
                Ok(stat) => {
                    if self.failing_mounts.remove(&mount.mount) {
                        tracing::info!(mount = %mount.mount, "statvfs works again");
                    }
                    let stats = FsStats::from_statvfs(&stat);
                    // Like df without -a: a filesystem with no blocks holds no data.
                    if stats.blocks > 0 {
                        disks.push(stats.disk_usage(mount));
                    }
                }
                Err(err) => {
                    if self.failing_mounts.insert(mount.mount.clone()) {
                        tracing::warn!(mount = %mount.mount, error = %err, "statvfs failed; mount left out of samples");
                    }
                }
            }
        }
        Ok(HostSample {
            load1: load.load1,
            load5: load.load5,
            load15: load.load15,
            physical_cores: self.cores.physical,
            logical_cores: self.cores.logical,
            physical_cores_estimated: self.cores.estimated,
            memory_total_bytes: to_i64(memory.total_bytes),
            memory_available_bytes: to_i64(memory.available_bytes),
            memory_used_percent: memory.used_percent(),
            disks,
        })
    }
}

impl Probe for HostProbe {
    fn name(&self) -> &str {
        "host"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// A failed sample is logged and skipped: the aggregator notices the silence.
    fn collect(&mut self) -> Collecting<'_> {
        let samples = match self.sample() {
            Ok(host) => vec![sample::Kind::Host(host)],
            Err(err) => {
                tracing::warn!("host sample failed: {err}");
                Vec::new()
            }
        };
        Box::pin(std::future::ready(Collected {
            samples,
            more: false,
        }))
    }
}

/// Load per physical core, the number the core_load rule watches.
pub fn core_load(sample: &HostSample) -> f64 {
    sample.load1 / f64::from(sample.physical_cores.max(1))
}

/// A host sample as the `sample` command prints it: the proto's fields, the sample time as
/// RFC 3339, and the derived core load.
#[derive(Debug, Serialize)]
pub struct HostSampleView<'a> {
    pub time: String,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub physical_cores: u32,
    pub logical_cores: u32,
    pub physical_cores_estimated: bool,
    pub core_load: f64,
    pub memory_total_bytes: i64,
    pub memory_available_bytes: i64,
    pub memory_used_percent: f64,
    pub disks: Vec<DiskUsageView<'a>>,
}

/// One disk in [`HostSampleView`].
#[derive(Debug, Serialize)]
pub struct DiskUsageView<'a> {
    pub mount: &'a str,
    pub device: &'a str,
    pub fs_type: &'a str,
    pub total_bytes: i64,
    pub available_bytes: i64,
    pub used_percent: f64,
    pub inodes_total: i64,
    pub inodes_free: i64,
}

impl<'a> HostSampleView<'a> {
    pub fn new(time: SystemTime, sample: &'a HostSample) -> HostSampleView<'a> {
        HostSampleView {
            time: humantime::format_rfc3339_millis(time).to_string(),
            load1: sample.load1,
            load5: sample.load5,
            load15: sample.load15,
            physical_cores: sample.physical_cores,
            logical_cores: sample.logical_cores,
            physical_cores_estimated: sample.physical_cores_estimated,
            core_load: core_load(sample),
            memory_total_bytes: sample.memory_total_bytes,
            memory_available_bytes: sample.memory_available_bytes,
            memory_used_percent: sample.memory_used_percent,
            disks: sample
                .disks
                .iter()
                .map(|disk| DiskUsageView {
                    mount: &disk.mount,
                    device: &disk.device,
                    fs_type: &disk.fs_type,
                    total_bytes: disk.total_bytes,
                    available_bytes: disk.available_bytes,
                    used_percent: disk.used_percent,
                    inodes_total: disk.inodes_total,
                    inodes_free: disk.inodes_free,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg() {
        let load = parse_loadavg("0.84 0.60 0.25 1/84 5544\n").unwrap();
        assert_eq!(
            load,
            LoadAvg {
                load1: 0.84,
                load5: 0.60,
                load15: 0.25
            }
        );
        assert!(
            parse_loadavg("0.84 0.60\n")
                .unwrap_err()
                .to_string()
                .contains("missing load15")
        );
        let err = parse_loadavg("x 0.60 0.25 1/84 5544")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "probe: /proc/loadavg: load1: \"x\" is not a load");
    }

    const MEMINFO: &str = "MemTotal:       24684092 kB\n\
                           MemFree:        23000000 kB\n\
                           MemAvailable:   24365944 kB\n\
                           Buffers:           12345 kB\n";

    #[test]
    fn meminfo() {
        let memory = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(memory.total_bytes, 24_684_092 * 1024);
        assert_eq!(memory.available_bytes, 24_365_944 * 1024);
        let expected = 100.0 * (1.0 - 24_365_944.0 / 24_684_092.0);
        assert!((memory.used_percent() - expected).abs() < 1e-9);
        assert!((memory.used_percent() - 1.2889).abs() < 1e-3);
    }

    #[test]
    fn meminfo_without_memavailable_is_an_error() {
        let err = parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n").unwrap_err();
        assert_eq!(err.to_string(), "probe: /proc/meminfo: no MemAvailable");
    }

    #[test]
    fn memory_used_percent_is_clamped() {
        let odd = Memory {
            total_bytes: 100,
            available_bytes: 150,
        };
        assert_eq!(odd.used_percent(), 0.0);
        let full = Memory {
            total_bytes: 100,
            available_bytes: 0,
        };
        assert_eq!(full.used_percent(), 100.0);
    }

    const CPUINFO_TWO_SOCKETS_HT: &str = "\
processor\t: 0\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 1\nphysical id\t: 0\ncore id\t\t: 1\n\n\
processor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\n\n\
processor\t: 3\nphysical id\t: 1\ncore id\t\t: 1\n\n\
processor\t: 4\nphysical id\t: 0\ncore id\t\t: 0\n\n\
processor\t: 5\nphysical id\t: 0\ncore id\t\t: 1\n\n\
processor\t: 6\nphysical id\t: 1\ncore id\t\t: 0\n\n\
processor\t: 7\nphysical id\t: 1\ncore id\t\t: 1\n\n";

    #[test]
    fn cpuinfo_counts_unique_physical_cores() {
        // Two sockets of two cores, each with two hyperthreads: core id repeats across
        // sockets, so the pair (not the core id alone) identifies a core.
        let cores = parse_cpuinfo(CPUINFO_TWO_SOCKETS_HT);
        assert_eq!(
            cores,
            CoreCount {
                physical: 4,
                logical: 8,
                estimated: false
            }
        );
    }

    #[test]
    fn cpuinfo_of_a_vm_without_topology_is_estimated() {
        let vm = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: vCPU\n\n\
                  processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: vCPU\n\n\
                  processor\t: 2\nvendor_id\t: GenuineIntel\nmodel name\t: vCPU\n";
        assert_eq!(
            parse_cpuinfo(vm),
            CoreCount {
                physical: 3,
                logical: 3,
                estimated: true
            }
        );
    }

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 259:1 / /var/lib/event\\040store rw,noatime shared:30 master:2 - xfs /dev/nvme1n1 rw
51 27 259:1 /data /srv/bind rw,noatime - xfs /dev/nvme1n1 rw
52 27 259:2 / /mnt/backup rw,noatime - ext4 /dev/mapper/vg-backup\\134x rw
53 27 0:45 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw
54 27 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro
55 27 0:50 / /run/user/1000 rw - fuse.sshfs host:/home rw
";

    fn mount_points(mounts: &[MountEntry<'_>]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.mount_point_lossy().into_owned())
            .collect()
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        let entries: Vec<_> = parse_mountinfo(MOUNTINFO).collect();
        assert_eq!(entries.len(), 12);
        let store = &entries[6];
        assert_eq!(store.device_id, "259:1");
        assert_eq!(store.mount_point.as_ref(), b"/var/lib/event store");
        assert_eq!(store.fs_type, "xfs");
        assert_eq!(store.source, "/dev/nvme1n1");
        assert_eq!(entries[8].source, "/dev/mapper/vg-backup\\x");
        assert_eq!(
            unescape("a\\011b\\012c\\\\d\\9").as_ref(),
            b"a\tb\nc\\\\d\\9"
        );
    }

    #[test]
    fn mountinfo_skips_pseudo_fs_and_bind_duplicates() {
        let selected = select_mounts(parse_mountinfo(MOUNTINFO), &MountFilter::default());
        assert_eq!(
            mount_points(&selected),
            ["/", "/var/lib/event store", "/mnt/backup", "/run/user/1000"]
        );
    }

    #[test]
    fn bind_duplicates_keep_the_shortest_mount_point() {
        // A bind mount of a subdirectory listed first still loses to the filesystem's root.
        let text = "60 1 8:1 /a/b /srv rw - ext4 /dev/sda1 rw\n\
                    61 1 8:1 / /data/disk1 rw - ext4 /dev/sda1 rw\n\
                    62 1 8:1 / /data/d1 rw - ext4 /dev/sda1 rw\n\
                    63 1 8:1 / /data/d2 rw - ext4 /dev/sda1 rw\n";
        let selected = select_mounts(parse_mountinfo(text), &MountFilter::default());
        assert_eq!(
            mount_points(&selected),
            ["/data/d1"],
            "root first, then shortest, then first"
        );
        // Only subdirectory binds: the shortest.
        let text = "60 1 8:1 /a /very/long rw - ext4 /dev/sda1 rw\n61 1 8:1 /b /srv rw - ext4 /dev/sda1 rw\n";
        let selected = select_mounts(parse_mountinfo(text), &MountFilter::default());
        assert_eq!(mount_points(&selected), ["/srv"]);
    }

    #[test]
    fn mount_filters() {
        let include = MountFilter {
            mounts_include: vec!["/".into(), "/var/lib/event store".into()],
            ..MountFilter::default()
        };
        let selected = select_mounts(parse_mountinfo(MOUNTINFO), &include);
        assert_eq!(mount_points(&selected), ["/", "/var/lib/event store"]);

        let exclude = MountFilter {
            mounts_exclude: vec!["/mnt/backup".into()],
            fs_types_exclude: vec!["fuse.sshfs".into()],
            ..MountFilter::default()
        };
        let selected = select_mounts(parse_mountinfo(MOUNTINFO), &exclude);
        assert_eq!(mount_points(&selected), ["/", "/var/lib/event store"]);
    }

    #[test]
    fn df_formula() {
        // This machine's root filesystem: `df -B1 /` printed 270553174016 total,
        // 12289232896 used, 85283516416 available, 13% (df rounds up). Root's reserved
        // blocks (most of the rest) count as neither used nor available.
        let stats = FsStats {
            fragment_size: 4096,
            blocks: 270_553_174_016 / 4096,
            blocks_free: (270_553_174_016 - 12_289_232_896) / 4096,
            blocks_available: 85_283_516_416 / 4096,
            files: 16_777_216,
            files_free: 16_500_000,
        };
        let expected = 12_289_232_896.0 / (12_289_232_896.0 + 85_283_516_416.0) * 100.0;
        assert!((stats.used_percent() - expected).abs() < 1e-9);
        assert_eq!(stats.used_percent().ceil(), 13.0);

        let entry = parse_mountinfo("27 1 254:0 / / rw - ext4 /dev/vda rw\n")
            .next()
            .unwrap();
        let disk = stats.disk_usage(&ReportedMount::from_entry(&entry));
        assert_eq!(disk.total_bytes, 270_553_174_016);
        assert_eq!(disk.available_bytes, 85_283_516_416);
        assert_eq!(
            (disk.inodes_total, disk.inodes_free),
            (16_777_216, 16_500_000)
        );
        assert_eq!(
            (
                disk.mount.as_str(),
                disk.device.as_str(),
                disk.fs_type.as_str()
            ),
            ("/", "/dev/vda", "ext4")
        );
    }

    #[test]
    fn df_formula_edge_cases() {
        let empty = FsStats {
            fragment_size: 4096,
            blocks: 0,
            blocks_free: 0,
            blocks_available: 0,
            files: 0,
            files_free: 0,
        };
        assert_eq!(empty.used_percent(), 0.0);
        let full = FsStats {
            blocks: 100,
            blocks_free: 5,
            blocks_available: 0,
            ..empty
        };
        assert_eq!(full.used_percent(), 100.0);
        let half = FsStats {
            blocks: 100,
            blocks_free: 50,
            blocks_available: 50,
            ..empty
        };
        assert_eq!(half.used_percent(), 50.0);
    }

    #[test]
    fn a_kept_open_file_is_read_whole_and_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text");
        let long = "x".repeat(10_000) + "\n";
        std::fs::write(&path, &long).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // Smaller than the file, to take more than one read.
        let mut buf = String::with_capacity(16);
        read_from_start(&file, &mut buf).unwrap();
        assert_eq!(buf, long);
        // The same open file, rewritten shorter: read again from the start, no stale tail.
        std::fs::write(&path, "short\n").unwrap();
        read_from_start(&file, &mut buf).unwrap();
        assert_eq!(buf, "short\n");
    }

    #[test]
    fn proc_files_kept_open_are_read_whole_at_every_sample() {
        let mut meminfo = ProcFile::new(MEMINFO_PATH);
        let mut buf = String::new();
        for _ in 0..3 {
            meminfo.read(&mut buf).unwrap();
            parse_meminfo(&buf).unwrap();
            // Every line, not just the start: the whole file is read each time.
            assert!(
                buf.ends_with('\n') && buf.contains("MemAvailable:"),
                "{buf}"
            );
        }
        let mut missing = ProcFile::new("/proc/no-such-file");
        assert!(matches!(
            missing.read(&mut buf),
            Err(ProbeError::Read {
                path: "/proc/no-such-file",
                ..
            })
        ));
    }

    #[test]
    fn sample_of_this_machine_is_plausible() {
        let mut probe = HostProbe::new(&HostConfig::default()).unwrap();
        let first = probe.sample().unwrap();
        let second = probe.sample().unwrap();
        for sample in [&first, &second] {
            assert!(sample.logical_cores >= 1);
            assert!(sample.physical_cores >= 1 && sample.physical_cores <= sample.logical_cores);
            assert!(sample.memory_total_bytes > 0);
            assert!((0.0..=100.0).contains(&sample.memory_used_percent));
            assert!(
                sample.disks.iter().any(|disk| disk.mount == "/"),
                "{:?}",
                sample.disks
            );
            for disk in &sample.disks {
                assert!(
                    !PSEUDO_FS_TYPES.contains(&disk.fs_type.as_str()),
                    "{disk:?}"
                );
                assert!((0.0..=100.0).contains(&disk.used_percent));
            }
        }
        assert_eq!(first.disks.len(), second.disks.len());
    }

    #[test]
    fn the_view_has_the_documented_keys() {
        let sample = HostSample {
            load1: 3.0,
            physical_cores: 2,
            logical_cores: 4,
            ..Default::default()
        };
        let json =
            serde_json::to_value(HostSampleView::new(SystemTime::UNIX_EPOCH, &sample)).unwrap();
        assert_eq!(json["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["core_load"], 1.5);
        for key in [
            "load5",
            "load15",
            "physical_cores_estimated",
            "memory_used_percent",
            "disks",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
