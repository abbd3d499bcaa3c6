//! The full-width kernels a layer function can call, each with its C
//! symbol: the JIT calls them by their address in this process, an object
//! file imports them by symbol from the kernel library
//! (`kernel_library.rs`).
//!
//! Adding a kernel is one line of [`wide_kernels!`]: the Rust function
//! (`#[no_mangle]`, in a module that `kernels/lib.rs` also compiles) names
//! the symbol, so the two cannot disagree.

use cranelift_codegen::ir::{ExternalName, Function, UserExternalName};

/// The `UserExternalName` namespace of kernel imports in a layer
/// function; the index is the kernel's position in [`WideKernel::ALL`].
/// (The object writer maps it to the imported symbol.)
pub(crate) const KERNEL_NAMESPACE: u32 = 1;

/// How a layer function reaches a full-width kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelLink {
    /// `call_indirect` to the kernel's address in this process (the JIT:
    /// no relocations).
    Address,
    /// A `call` to the imported symbol (objects: one relocation per call,
    /// resolved by the kernel library at link time).
    Symbol,
}

macro_rules! wide_kernels {
    ($($kernel:ident => $module:ident :: $function:ident,)*) => {
        /// A full-width kernel.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum WideKernel {
            $($kernel,)*
        }

        impl WideKernel {
            /// Every kernel, in the order of their import indices.
            pub const ALL: &'static [WideKernel] = &[$(WideKernel::$kernel,)*];

            /// The C symbol the kernel library exports.
            pub fn symbol(self) -> &'static str {
                match self {
                    $(WideKernel::$kernel => stringify!($function),)*
                }
            }

            /// The kernel's address in this process.
            #[cfg(target_arch = "x86_64")]
            pub fn address(self) -> usize {
                match self {
                    $(WideKernel::$kernel => crate::$module::$function as *const () as usize,)*
                }
            }
        }
    };
}

wide_kernels! {
    PointwiseAvx2 => wide::shufflekit_pointwise_avx2,
    PointwiseAvx512 => wide::shufflekit_pointwise_avx512,
    WindowAvx512 => wide_window::shufflekit_window_avx512,
}

// The kernels have the signature `lower::wide_call` calls.
#[cfg(target_arch = "x86_64")]
const _: [crate::wide::PointwiseFn; 3] = [
    crate::wide::shufflekit_pointwise_avx2,
    crate::wide::shufflekit_pointwise_avx512,
    crate::wide_window::shufflekit_window_avx512,
];

impl WideKernel {
    /// The kernel's import index (see [`KERNEL_NAMESPACE`]).
    pub fn index(self) -> u32 {
        // ALL lists every variant, so the position exists.
        WideKernel::ALL.iter().position(|&k| k == self).unwrap_or(0) as u32
    }

    /// The kernel an import index names.
    pub fn from_index(index: u32) -> Option<WideKernel> {
        WideKernel::ALL.get(index as usize).copied()
    }

    /// The kernel a relocation of a compiled layer function points to, if
    /// it is a kernel import.
    pub fn of_name(func: &Function, name: &ExternalName) -> Option<WideKernel> {
        let ExternalName::User(r) = name else {
            return None;
        };
        let UserExternalName { namespace, index } = func.params.user_named_funcs().get(*r)?;
        if *namespace != KERNEL_NAMESPACE {
            return None;
        }
        WideKernel::from_index(*index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_and_symbols_are_distinct() {
        for &k in WideKernel::ALL {
            assert_eq!(WideKernel::from_index(k.index()), Some(k));
            assert!(k.symbol().starts_with("shufflekit_"), "{}", k.symbol());
        }
        let mut symbols: Vec<_> = WideKernel::ALL.iter().map(|k| k.symbol()).collect();
        symbols.sort_unstable();
        symbols.dedup();
        assert_eq!(symbols.len(), WideKernel::ALL.len());
        assert_eq!(
            WideKernel::PointwiseAvx512.symbol(),
            "shufflekit_pointwise_avx512"
        );
    }
}
