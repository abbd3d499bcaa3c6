//! The machine a search ran on, for reports.

use serde::{Deserialize, Serialize};

/// CPU model, flags and core count, read from `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// The CPU model name (`unknown` when it cannot be read).
    pub cpu_model: String,
    /// The CPU feature flags of the first processor.
    pub cpu_flags: Vec<String>,
    /// Logical CPUs available to this process.
    pub logical_cpus: usize,
    /// The OS and architecture (`linux x86_64`).
    pub os: String,
}

impl MachineInfo {
    /// Reads this machine's description.
    pub fn detect() -> MachineInfo {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        MachineInfo::from_cpuinfo(&text)
    }

    /// Parses the text of `/proc/cpuinfo` (x86 `model name`/`flags`, Arm
    /// `CPU part`/`Features`).
    pub fn from_cpuinfo(text: &str) -> MachineInfo {
        let field = |names: &[&str]| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                names.contains(&k.trim()).then(|| v.trim().to_string())
            })
        };
        let cpu_model = field(&["model name", "Model", "Hardware", "CPU part"])
            .unwrap_or_else(|| "unknown".to_string());
        let cpu_flags = field(&["flags", "Features"])
            .map(|f| f.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        MachineInfo {
            cpu_model,
            cpu_flags,
            logical_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}
