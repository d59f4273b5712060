//! Resource limits of a job: its cgroup on v1 and v2 (`--memory`, `--cpus`, `--pids`, `--io-max`,
//! the CPU-time limit, the OOM policy, usage, killing and sweeping: [`cgroup`]), and the device
//! allow-list ([`devfilter`] on v2, the devices controller on v1). rlimits are planned by the
//! compiler (`plan/compile.rs`) and set by the setup child.

pub(crate) mod cgroup;
pub(crate) mod devfilter;
