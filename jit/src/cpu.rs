//! The CPU levels an object file can be compiled for (`compile --cpu`):
//! which instructions its code may use, and so which kernel tier
//! ([`Isa`]) its pointwise layers run.

use std::fmt;
use std::str::FromStr;

use crate::isa::Isa;

/// A CPU level of an object file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cpu {
    /// The portable x86-64 baseline (SSE4.2, no AVX): the 128-bit code,
    /// which runs on any x86-64 machine of the last 15 years.
    X86_64,
    /// x86-64-v3 (AVX2, FMA, BMI): the AVX2+FMA kernels.
    X86_64V3,
    /// x86-64-v4 (v3 and AVX-512F/DQ/VL): the AVX-512 kernels.
    X86_64V4,
    /// What this machine has: its instruction set extensions and its
    /// widest kernel tier (the target must be this machine's).
    Host,
}

/// A `--cpu` name that is none of [`Cpu::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown cpu `{0}`: expected x86-64, x86-64-v3, x86-64-v4 or host")]
pub struct UnknownCpu(pub String);

impl Cpu {
    /// Every level, the x86-64 ones narrowest first.
    pub const ALL: [Cpu; 4] = [Cpu::X86_64, Cpu::X86_64V3, Cpu::X86_64V4, Cpu::Host];

    /// The name `--cpu` takes (the x86-64 psABI's level names).
    pub fn name(self) -> &'static str {
        match self {
            Cpu::X86_64 => "x86-64",
            Cpu::X86_64V3 => "x86-64-v3",
            Cpu::X86_64V4 => "x86-64-v4",
            Cpu::Host => "host",
        }
    }

    /// Whether this is one of the x86-64 levels (not `host`).
    pub fn is_x86_64_level(self) -> bool {
        !matches!(self, Cpu::Host)
    }

    /// The kernel tier of an x86-64 level; `host` is the host's widest.
    pub fn isa(self) -> Isa {
        match self {
            Cpu::X86_64 => Isa::Sse,
            Cpu::X86_64V3 => Isa::Avx2,
            Cpu::X86_64V4 => Isa::Avx512,
            Cpu::Host => Isa::host(),
        }
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cpu {
    type Err = UnknownCpu;
    fn from_str(s: &str) -> Result<Cpu, UnknownCpu> {
        Cpu::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCpu(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_levels_map_to_tiers() {
        for cpu in Cpu::ALL {
            assert_eq!(cpu.name().parse::<Cpu>(), Ok(cpu));
        }
        assert_eq!(Cpu::X86_64V4.isa(), Isa::Avx512);
        assert_eq!(Cpu::X86_64V3.isa(), Isa::Avx2);
        assert_eq!(Cpu::X86_64.isa(), Isa::Sse);
        let e = "skylake".parse::<Cpu>().unwrap_err().to_string();
        assert!(
            e.contains("unknown cpu `skylake`") && e.contains("x86-64-v4"),
            "{e}"
        );
    }
}
