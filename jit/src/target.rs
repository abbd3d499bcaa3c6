//! The one place where target-specific choices are made: which ISA to
//! generate code for, with which Cranelift settings, and which instructions
//! the kernels may use (fused multiply-add).

use std::sync::Arc;

use cranelift_codegen::isa::{self, LookupError, TargetIsa};
use cranelift_codegen::settings::{self, Configurable, SetError};
use cranelift_codegen::CodegenError;

use crate::cpu::Cpu;
use crate::isa::Isa;
use crate::JitError;

/// The triples [`Target::for_object`] accepts besides `host`.
pub const OBJECT_TARGETS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// Why Cranelift cannot generate code for a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Cranelift does not support the machine this process runs on.
    #[error("the host is not supported: {0}")]
    Host(&'static str),
    /// The target is not one of `host` and [`OBJECT_TARGETS`].
    #[error("unsupported target `{0}`: expected one of host, {targets}", targets = OBJECT_TARGETS.join(", "))]
    Unsupported(String),
    /// Cranelift was built without the target's backend.
    #[error("target `{name}`: {source}")]
    Lookup {
        /// The target triple.
        name: String,
        /// Cranelift's lookup error.
        source: LookupError,
    },
    /// Cranelift rejected one of the settings (a bug in [`Target`]).
    #[error("setting {name}={value}: {source}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: &'static str,
        /// Cranelift's error.
        source: SetError,
    },
    /// Cranelift could not build the ISA from the settings (boxed: the
    /// error is large and rare).
    #[error("{0}")]
    Isa(#[source] Box<CodegenError>),
    /// `--cpu` names a CPU the target cannot be.
    #[error("cpu `{cpu}` does not fit target `{target}`: {reason}")]
    CpuMismatch {
        /// The CPU asked for.
        cpu: Cpu,
        /// The target triple.
        target: String,
        /// Why not.
        reason: String,
    },
    /// Objects with the wide kernels are written only by an x86-64 build
    /// (the kernel library is built for and beside it).
    #[error("cpu `{0}`: objects with the wide kernels can only be written by an x86-64 build of shufflekit")]
    NoKernelLibrary(Cpu),
}

/// What the lowering needs to know about the target, derived from the ISA
/// flags in [`Target::features`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Features {
    /// Emit `fma` for multiply-adds. Only when the target executes it as
    /// one instruction (x86-64 with AVX and FMA, AArch64 always); otherwise
    /// Cranelift would call a slow `fmaf` libcall, so the kernels emit a
    /// multiply and an add instead.
    pub fma: bool,
}

/// A code generation target: the ISA with its settings, and the features
/// the kernels use.
#[derive(Clone)]
pub(crate) struct Target {
    pub isa: Arc<dyn TargetIsa>,
    pub features: Features,
}

impl Target {
    /// The machine this process runs on, with every ISA extension
    /// Cranelift detects.
    pub fn host() -> Result<Target, JitError> {
        let isa_builder = cranelift_native::builder().map_err(TargetError::Host)?;
        Target::from_isa_builder(isa_builder)
    }

    /// A target from an ISA builder (the host's, or a cross target's).
    pub fn from_isa_builder(isa_builder: isa::Builder) -> Result<Target, JitError> {
        Target::with_flags(isa_builder, &[])
    }

    /// A target for an object file: `host` (this machine's triple) or one
    /// of the triples in [`OBJECT_TARGETS`], at CPU level `cpu` (`None`:
    /// the triple's portable baseline, x86-64: SSE4.2, no AVX, so no FMA;
    /// AArch64: NEON, which always has `fmla`), with the kernel tier that
    /// level runs. Object code is position-independent.
    pub fn for_object(name: &str, cpu: Option<Cpu>) -> Result<(Target, Isa), JitError> {
        let pic = [("is_pic", "true")];
        let host = cranelift_native::builder_with_options(false).map_err(TargetError::Host)?;
        let host_triple = host.triple().to_string();
        let triple = if name == "host" {
            host_triple.clone()
        } else if OBJECT_TARGETS.contains(&name) {
            name.to_string()
        } else {
            return Err(TargetError::Unsupported(name.to_string()).into());
        };
        let x86 = triple.starts_with("x86_64");
        let mismatch = |cpu: Cpu, reason: String| TargetError::CpuMismatch {
            cpu,
            target: triple.clone(),
            reason,
        };
        let (builder, isa) = match cpu {
            Some(Cpu::Host) if triple != host_triple => {
                return Err(
                    mismatch(Cpu::Host, format!("`host` is this machine, {host_triple}")).into(),
                );
            }
            Some(Cpu::Host) => {
                let builder = cranelift_native::builder().map_err(TargetError::Host)?;
                (builder, if x86 { Isa::host() } else { Isa::Sse })
            }
            Some(level) if !x86 => {
                return Err(mismatch(
                    level,
                    "it is an x86-64 level (this target takes `host` on such a machine, or no --cpu)"
                        .into(),
                )
                .into());
            }
            level => {
                let mut builder =
                    isa::lookup_by_name(&triple).map_err(|source| TargetError::Lookup {
                        name: triple.clone(),
                        source,
                    })?;
                let level = level.unwrap_or(Cpu::X86_64);
                if x86 {
                    x86_flags(&mut builder, level)?;
                }
                (builder, if x86 { level.isa() } else { Isa::Sse })
            }
        };
        if isa != Isa::Sse && !cfg!(target_arch = "x86_64") {
            return Err(TargetError::NoKernelLibrary(cpu.unwrap_or(Cpu::X86_64)).into());
        }
        Ok((Target::with_flags(builder, &pic)?, isa))
    }

    /// A target from an ISA builder with extra shared settings.
    fn with_flags(
        isa_builder: isa::Builder,
        extra: &[(&'static str, &'static str)],
    ) -> Result<Target, JitError> {
        let mut flags = settings::builder();
        let settings: [(&'static str, &'static str); 5] = [
            ("opt_level", "none"),
            // Kernels may keep a row of inputs on the stack (up to
            // `lower::MAX_ROW_COPY` bytes): touch each page of such a frame
            // in order, so it cannot step over a thread's guard page.
            ("enable_probestack", "true"),
            ("probestack_strategy", "inline"),
            // The generated code is never unwound through or debugged.
            ("unwind_info", "false"),
            (
                "enable_verifier",
                if cfg!(debug_assertions) {
                    "true"
                } else {
                    "false"
                },
            ),
        ];
        for &(name, value) in settings.iter().chain(extra) {
            flags
                .set(name, value)
                .map_err(|source| TargetError::Setting {
                    name,
                    value,
                    source,
                })?;
        }
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| TargetError::Isa(Box::new(e)))?;
        let features = Features::of(&*isa);
        Ok(Target { isa, features })
    }
}

/// Enables the instruction set extensions of an x86-64 level. The
/// baseline is SSE4.2 (what Cranelift's 128-bit code needs to be fast);
/// v3 and v4 are Cranelift's presets plus the flags the presets leave out
/// but the levels include (AVX; AVX-512F).
fn x86_flags(builder: &mut isa::Builder, level: Cpu) -> Result<(), TargetError> {
    let flags: &[&'static str] = match level {
        Cpu::X86_64 | Cpu::Host => &["has_sse3", "has_ssse3", "has_sse41", "has_sse42"],
        Cpu::X86_64V3 => &["x86-64-v3", "has_avx"],
        Cpu::X86_64V4 => &["x86-64-v4", "has_avx", "has_avx512f"],
    };
    for &flag in flags {
        builder
            .enable(flag)
            .map_err(|source| TargetError::Setting {
                name: flag,
                value: "true",
                source,
            })?;
    }
    Ok(())
}

impl Features {
    /// Reads the features from the ISA's flags.
    fn of(isa: &dyn TargetIsa) -> Features {
        let flag = |name: &str| {
            isa.isa_flags()
                .iter()
                .any(|v| v.name == name && v.as_bool() == Some(true))
        };
        let fma = match isa.name() {
            "x64" => flag("has_avx") && flag("has_fma"),
            "aarch64" => true,
            _ => false,
        };
        Features { fma }
    }
}
