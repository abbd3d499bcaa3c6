//! The x86-64 vector tiers the kernels can run at, chosen from the host's
//! features when a model is compiled, or forced (to test every tier on one
//! machine).

use std::fmt;
use std::str::FromStr;

/// A vector tier. [`Isa::Sse`] is the portable 128-bit Cranelift code
/// (also the only tier on AArch64, where NEON is 128 bits); the others run
/// the hot loops with `std::arch` kernels at 256 or 512 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// 128-bit `f32x4` Cranelift code on every target.
    Sse,
    /// 256-bit AVX2 with FMA (x86-64 only).
    Avx2,
    /// 512-bit AVX-512F (x86-64 only).
    Avx512,
}

/// A tier name that is not `sse`, `avx2` or `avx512`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown isa `{0}`: expected sse, avx2 or avx512")]
pub struct UnknownIsa(pub String);

impl Isa {
    /// Every tier, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Sse, Isa::Avx2, Isa::Avx512];

    /// The name `--isa` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Sse => "sse",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Vector width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Isa::Sse => 128,
            Isa::Avx2 => 256,
            Isa::Avx512 => 512,
        }
    }

    /// Whether the host can run this tier.
    pub fn supported(self) -> bool {
        match self {
            Isa::Sse => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }

    /// The widest tier the host runs.
    pub fn host() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.supported())
            .unwrap_or(Isa::Sse)
    }

    /// The tiers the host runs, narrowest first.
    pub fn host_tiers() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = UnknownIsa;
    fn from_str(s: &str) -> Result<Isa, UnknownIsa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| UnknownIsa(s.to_string()))
    }
}
