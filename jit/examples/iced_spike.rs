//! Spike of route (a) of issue 14, measured beside route (b): the AVX-512
//! pointwise tile assembled at JIT time with `iced-x86`'s `code_asm`,
//! specialised on its constants (input channels, channels per tile,
//! vectors of 16 pixels per register block, plane length, pixels per row,
//! ReLU), placed in executable memory with cranelift-jit's
//! `define_function_bytes` (as it would ship, for JIT and object alike),
//! checked bit for bit against `wide.rs`'s `std::arch` kernel and timed
//! beside it, interleaved in rounds.
//!
//! `cargo run --release -p shufflekit-jit --example iced_spike -- [rounds] [nv]`
//!
//! Not a product path: no residual input, no ReLU6, and the walk over
//! units and tiles is Rust here (it would be the layer's Cranelift
//! function). Both routes read the same packed weights (per tile of `mt`
//! channels: weights `[cin_g][mt]`, bias `[mt]`, output byte offsets
//! `[mt]`) and walk the same units.

#[cfg(target_arch = "x86_64")]
mod spike {
    use std::time::Instant;

    use cranelift_codegen::ir::{AbiParam, Signature};
    use cranelift_codegen::settings::{self, Configurable};
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{Linkage, Module};
    use iced_x86::code_asm::*;
    use iced_x86::IcedError;
    use shufflekit_jit::spike::{pointwise_avx512, Shape};

    /// Why the spike stopped.
    #[derive(Debug, thiserror::Error)]
    pub enum SpikeError {
        /// The assembler rejected an instruction (a bug in the generator).
        #[error("assembling the tile")]
        Asm(#[source] IcedError),
        /// cranelift-jit could not place or link the bytes.
        #[error("placing the code")]
        Module(#[source] Box<cranelift_module::ModuleError>),
        /// The host ISA could not be built.
        #[error("host isa: {0}")]
        Host(String),
        /// A constant does not fit the instruction's displacement or the
        /// register budget.
        #[error("tile out of range: {0}")]
        Range(&'static str),
        /// The two routes computed different outputs.
        #[error("`{layer}`: {bad} outputs differ (max |diff| {max})")]
        Mismatch {
            /// The layer.
            layer: &'static str,
            /// How many outputs differ.
            bad: usize,
            /// The largest difference.
            max: f32,
        },
    }

    impl From<IcedError> for SpikeError {
        fn from(e: IcedError) -> Self {
            SpikeError::Asm(e)
        }
    }

    impl From<cranelift_module::ModuleError> for SpikeError {
        fn from(e: cranelift_module::ModuleError) -> Self {
            SpikeError::Module(Box::new(e))
        }
    }

    /// `fn(x of the group, packed block of the tile, out, first pixel)`.
    type TileFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64);

    /// The constants one assembled tile is specialised on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct TileSpec {
        cin: usize,
        /// Channels of this tile (`m`, or the group's remainder).
        mt: usize,
        /// Vectors of 16 pixels per register block.
        nv: usize,
        /// Floats between two input channels' planes.
        plane: usize,
        /// Pixels this tile computes from its first pixel (a row).
        n: usize,
        relu: bool,
    }

    const ZMM: [AsmRegisterZmm; 32] = [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
        zmm14, zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26,
        zmm27, zmm28, zmm29, zmm30, zmm31,
    ];

    /// Accumulators live in zmm0..24, the block's inputs after them,
    /// broadcast weights in what is left below zmm31 (zero, for ReLU).
    const MAX_ACC: usize = 24;

    fn disp(v: usize) -> Result<i32, SpikeError> {
        i32::try_from(v).map_err(|_| SpikeError::Range("a displacement exceeds 2 GiB"))
    }

    /// The tile's machine code. Arguments (System V): rdi = input of the
    /// group, rsi = the tile's packed block, rdx = output of the image,
    /// rcx = first pixel. Uses only caller-saved registers.
    fn assemble(t: &TileSpec) -> Result<Vec<u8>, SpikeError> {
        if t.mt == 0 || t.cin == 0 || t.nv == 0 || t.mt * t.nv > MAX_ACC || 24 + t.nv > 30 {
            return Err(SpikeError::Range("channels x vectors exceed the registers"));
        }
        let mut a = CodeAssembler::new(64)?;
        a.lea(r8, ptr(rdi + rcx * 4))?;
        a.vxorps(zmm31, zmm31, zmm31)?;
        let step = 16 * t.nv;
        let (full, tail) = (t.n / step, t.n % step);
        if full > 0 {
            a.mov(r10, full as u64)?;
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            block(&mut a, t, t.nv, false)?;
            a.dec(r10)?;
            a.jnz(top)?;
        }
        if tail > 0 {
            let nv = tail.div_ceil(16);
            let last = tail - 16 * (nv - 1);
            let masked = last < 16;
            if masked {
                a.mov(eax, (1u32 << last) - 1)?;
                a.kmovw(k1, eax)?;
            }
            block(&mut a, t, nv, masked)?;
        }
        a.vzeroupper()?;
        a.ret()?;
        Ok(a.assemble(0)?)
    }

    /// One register block of `nv` vectors at pixel rcx (input at r8);
    /// the last vector masked by k1 when `masked`. Advances r8 and rcx.
    fn block(
        a: &mut CodeAssembler,
        t: &TileSpec,
        nv: usize,
        masked: bool,
    ) -> Result<(), SpikeError> {
        let acc = |c: usize, v: usize| ZMM[c * nv + v];
        let input = |v: usize| ZMM[MAX_ACC + v];
        let spare: Vec<AsmRegisterZmm> = (MAX_ACC + nv..31).map(|i| ZMM[i]).collect();
        for &z in &ZMM[..t.mt * nv] {
            a.vxorps(z, z, z)?;
        }
        // The input-channel loop, unrolled by two (as LLVM does in
        // `wide.rs`), then the odd channel if any.
        let body = |a: &mut CodeAssembler, k: usize| -> Result<(), SpikeError> {
            let (xk, wk) = (4 * t.plane * k, 4 * t.mt * k);
            for v in 0..nv {
                let src = zmmword_ptr(rax + disp(xk + 64 * v)?);
                if masked && v + 1 == nv {
                    a.vmovups(input(v).k1().z(), src)?;
                } else {
                    a.vmovups(input(v), src)?;
                }
            }
            for c in 0..t.mt {
                let w = spare[c % spare.len()];
                a.vbroadcastss(w, dword_ptr(r9 + disp(wk + 4 * c)?))?;
                for v in 0..nv {
                    a.vfmadd231ps(acc(c, v), w, input(v))?;
                }
            }
            Ok(())
        };
        a.mov(rax, r8)?;
        a.mov(r9, rsi)?;
        if t.cin >= 2 {
            a.mov(r11, (t.cin / 2) as u64)?;
            let mut ic = a.create_label();
            a.set_label(&mut ic)?;
            body(a, 0)?;
            body(a, 1)?;
            a.add(rax, disp(8 * t.plane)?)?;
            a.add(r9, disp(8 * t.mt)?)?;
            a.dec(r11)?;
            a.jnz(ic)?;
        }
        if t.cin % 2 == 1 {
            body(a, 0)?;
        }
        // Epilogue: bias, ReLU, store at the channel's byte offset.
        let bias_at = t.cin * t.mt * 4;
        let off_at = bias_at + t.mt * 4;
        for c in 0..t.mt {
            a.vbroadcastss(spare[0], dword_ptr(rsi + disp(bias_at + 4 * c)?))?;
            a.mov(eax, dword_ptr(rsi + disp(off_at + 4 * c)?))?;
            a.add(rax, rdx)?;
            for v in 0..nv {
                a.vaddps(acc(c, v), acc(c, v), spare[0])?;
                if t.relu {
                    a.vmaxps(acc(c, v), acc(c, v), zmm31)?;
                }
                let dst = zmmword_ptr(rax + rcx * 4 + disp(64 * v)?);
                if masked && v + 1 == nv {
                    a.vmovups(dst.k1(), acc(c, v))?;
                } else {
                    a.vmovups(dst, acc(c, v))?;
                }
            }
        }
        a.add(r8, disp(64 * nv)?)?;
        a.add(rcx, disp(16 * nv)?)?;
        Ok(())
    }

    /// One pointwise layer (groups, 1x1, stride 1) as the plan lays it out.
    struct Layer {
        name: &'static str,
        groups: usize,
        cin_g: usize,
        cout_g: usize,
        plane: usize,
        relu: bool,
    }

    impl Layer {
        /// The register tile's channels, as `plan::conv_tile` picks them.
        fn m(&self) -> usize {
            [4, 5, 6, 3]
                .into_iter()
                .find(|m| self.cout_g.is_multiple_of(*m))
                .unwrap_or(self.cout_g.min(6))
        }

        /// `(row_w, rows, last_w)` as `plan::row_width` splits the plane
        /// (rows of at most 16 KB of inputs, at least 8 units).
        fn rows(&self) -> (usize, usize, usize) {
            let most = (16 * 1024 / 4 / self.cin_g).clamp(8, 256) / 8 * 8;
            if self.plane <= most {
                return (self.plane, 1, self.plane);
            }
            let rows = self
                .plane
                .div_ceil(most)
                .max(8usize.div_ceil(self.groups))
                .min(self.plane.div_ceil(8));
            let w = self.plane.div_ceil(rows).next_multiple_of(8);
            let rows = self.plane.div_ceil(w);
            (w, rows, self.plane - (rows - 1) * w)
        }

        fn shape(&self) -> Shape {
            let (row_w, rows, last_w) = self.rows();
            Shape {
                cin_g: self.cin_g as i64,
                cout_g: self.cout_g as i64,
                m: self.m() as i64,
                plane: self.plane as i64,
                row_w: row_w as i64,
                rows: rows as i64,
                last_w: last_w as i64,
                act: i64::from(self.relu),
                kc: self.cin_g as i64,
            }
        }

        fn macs(&self) -> f64 {
            (self.groups * self.cin_g * self.cout_g * self.plane) as f64
        }

        /// Weights, bias and output offsets in the packer's layout.
        fn pack(&self, seed: &mut u64) -> Vec<f32> {
            let m = self.m();
            let mut out = Vec::new();
            for g in 0..self.groups {
                for t in 0..self.cout_g.div_ceil(m) {
                    let mt = m.min(self.cout_g - t * m);
                    out.extend((0..self.cin_g * mt + mt).map(|_| rand(seed)));
                    let oc0 = g * self.cout_g + t * m;
                    out.extend(
                        (0..mt).map(|j| f32::from_bits(((oc0 + j) * self.plane * 4) as u32)),
                    );
                }
            }
            out
        }
    }

    /// A xorshift in `[-1, 1)`: inputs with both signs, so ReLU matters.
    fn rand(s: &mut u64) -> f32 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// The assembled tiles of one layer, in the module that owns them.
    struct IcedLayer {
        _module: JITModule,
        /// `[full tile, remainder tile][full row, last row]`.
        tiles: Vec<[TileFn; 2]>,
    }

    fn host_module() -> Result<JITModule, SpikeError> {
        let mut flags = settings::builder();
        flags
            .set("opt_level", "speed")
            .map_err(|e| SpikeError::Host(e.to_string()))?;
        let isa = cranelift_native::builder()
            .map_err(|e| SpikeError::Host(e.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| SpikeError::Host(e.to_string()))?;
        Ok(JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        )))
    }

    fn build_iced(l: &Layer, nv: usize) -> Result<IcedLayer, SpikeError> {
        let mut module = host_module()?;
        // What the declaration says; the bytes are `TileFn` regardless.
        let mut sig = Signature::new(module.isa().default_call_conv());
        sig.params
            .extend([AbiParam::new(cranelift_codegen::ir::types::I64); 4]);
        let (m, rem) = (l.m(), l.cout_g % l.m());
        let (row_w, _, last_w) = l.rows();
        let mut ids = Vec::new();
        for mt in [m, rem].into_iter().filter(|&mt| mt > 0) {
            let mut pair = Vec::new();
            for n in [row_w, last_w] {
                let spec = TileSpec {
                    cin: l.cin_g,
                    mt,
                    nv,
                    plane: l.plane,
                    n,
                    relu: l.relu,
                };
                let bytes = assemble(&spec)?;
                let name = format!("tile{}", ids.len() * 2 + pair.len());
                let id = module.declare_function(&name, Linkage::Local, &sig)?;
                module.define_function_bytes(id, 64, &bytes, &[])?;
                pair.push(id);
            }
            ids.push([pair[0], pair[1]]);
        }
        module.finalize_definitions()?;
        let tiles = ids
            .iter()
            .map(|pair| {
                pair.map(|id| {
                    // SAFETY: `assemble` wrote this code for the C
                    // signature of `TileFn`.
                    unsafe {
                        std::mem::transmute::<*const u8, TileFn>(module.get_finalized_function(id))
                    }
                })
            })
            .collect();
        Ok(IcedLayer {
            _module: module,
            tiles,
        })
    }

    /// Route (a): the units of `wide.rs`'s `for_tiles`, each tile a call
    /// of its assembled kernel.
    fn run_iced(l: &Layer, k: &IcedLayer, out: &mut [f32], x: &[f32], packed: &[f32]) {
        let (m, rem) = (l.m(), l.cout_g % l.m());
        let (row_w, rows, _) = l.rows();
        let tiles = l.cout_g.div_ceil(m);
        let group_len =
            (l.cout_g / m) * m * (l.cin_g + 2) + rem * (l.cin_g + 2) * usize::from(rem > 0);
        assert!(x.len() >= l.groups * l.cin_g * l.plane && packed.len() >= l.groups * group_len);
        assert!(out.len() >= l.groups * l.cout_g * l.plane);
        for u in 0..l.groups * rows {
            let (g, oy) = (u / rows, u % rows);
            for t in 0..tiles {
                let f = k.tiles[usize::from(t * m + m > l.cout_g)][usize::from(oy + 1 == rows)];
                // SAFETY: the asserts above: group `g`, tile `t` and row
                // `oy` lie inside the input, the packed weights and (by
                // the offsets `pack` wrote) the output.
                unsafe {
                    f(
                        x.as_ptr().add(g * l.cin_g * l.plane),
                        packed.as_ptr().add(g * group_len + t * m * (l.cin_g + 2)),
                        out.as_mut_ptr(),
                        (oy * row_w) as i64,
                    )
                }
            }
        }
    }

    /// Route (b): `wide.rs`'s kernel over every unit.
    fn run_arch(l: &Layer, s: &Shape, out: &mut [f32], x: &[f32], packed: &[f32]) {
        let units = l.groups as i64 * s.rows;
        assert!(out.len() >= l.groups * l.cout_g * l.plane);
        // SAFETY: the host has AVX-512F (checked in `main`); buffers are
        // laid out as the packer and the plan lay them out.
        unsafe {
            pointwise_avx512(
                out.as_mut_ptr(),
                x.as_ptr(),
                std::ptr::null(),
                packed.as_ptr(),
                0,
                units,
                (s as *const Shape).cast(),
            )
        }
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn shell(cmd: &str) -> String {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// User + system CPU seconds of this process (`/proc/self/stat`,
    /// clock ticks of 1/100 s); 0 where it cannot be read.
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // utime and stime are fields 14 and 15 of the line; the parse
        // drops the state letter (field 3), so they are 10 and 11 here.
        f.get(10)
            .zip(f.get(11))
            .map_or(0.0, |(u, s)| (u + s) / 100.0)
    }

    pub fn main() -> Result<(), SpikeError> {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        let rounds = args.first().copied().unwrap_or(41).max(1);
        let nv = args.get(1).copied().unwrap_or(4);
        if !is_x86_feature_detected!("avx512f") {
            println!("the host has no AVX-512F: nothing to compare");
            return Ok(());
        }
        println!(
            "cpu flags: {}",
            shell("grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\\n' | grep -E '^(fma|avx|avx2|avx512.*)$' | tr '\\n' ' '")
        );
        println!("uptime before: {}", shell("uptime"));
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        let layers = [
            Layer {
                name: "v1 g=3 stage2 240->60 28x28",
                groups: 3,
                cin_g: 80,
                cout_g: 20,
                plane: 784,
                relu: true,
            },
            Layer {
                name: "v1 g=3 stage2 60->240 28x28",
                groups: 3,
                cin_g: 20,
                cout_g: 80,
                plane: 784,
                relu: false,
            },
            Layer {
                name: "v1 g=3 stage3 480->120 14x14",
                groups: 3,
                cin_g: 160,
                cout_g: 40,
                plane: 196,
                relu: true,
            },
            Layer {
                name: "v1 g=3 stage3 120->480 14x14",
                groups: 3,
                cin_g: 40,
                cout_g: 160,
                plane: 196,
                relu: false,
            },
            Layer {
                name: "mobilenet 256->256 14x14",
                groups: 1,
                cin_g: 256,
                cout_g: 256,
                plane: 196,
                relu: true,
            },
        ];
        println!("{rounds} rounds (iced, std::arch, iced, ...), iced tile nv = {nv} (std::arch: 4), 1 thread; G MAC/s: median of the rounds (best round); ratio: median of the per-round ratios");
        println!("| layer | row_w x rows | iced-x86 (best) | std::arch (best) | iced / arch | iced code, assembly + placing |");
        println!("|---|---|---:|---:|---:|---:|");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for l in &layers {
            let shape = l.shape();
            let x: Vec<f32> = (0..l.groups * l.cin_g * l.plane)
                .map(|_| rand(&mut seed))
                .collect();
            let packed = l.pack(&mut seed);
            let mut out_a = vec![0.0f32; l.groups * l.cout_g * l.plane];
            let mut out_b = vec![1.0f32; out_a.len()];
            let t0 = Instant::now();
            let iced = build_iced(l, nv)?;
            let build = t0.elapsed();
            run_iced(l, &iced, &mut out_a, &x, &packed);
            run_arch(l, &shape, &mut out_b, &x, &packed);
            let diffs: Vec<f32> = out_a
                .iter()
                .zip(&out_b)
                .map(|(a, b)| (a - b).abs())
                .filter(|d| *d != 0.0)
                .collect();
            if !diffs.is_empty() || out_a.iter().any(|v| v.is_nan()) {
                return Err(SpikeError::Mismatch {
                    layer: l.name,
                    bad: diffs.len(),
                    max: diffs.iter().copied().fold(0.0, f32::max),
                });
            }
            // Iterations for about 3 ms per slot: short slots are rarely
            // preempted on a loaded machine, and the median skips those.
            let t = Instant::now();
            run_arch(l, &shape, &mut out_b, &x, &packed);
            let once = t.elapsed().as_secs_f64().max(1e-6);
            let iters = ((0.003 / once) as usize).clamp(3, 10_000);
            let (mut ga, mut gb) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                let t = Instant::now();
                for _ in 0..iters {
                    run_iced(l, &iced, &mut out_a, &x, &packed);
                }
                ga.push(l.macs() * iters as f64 / t.elapsed().as_secs_f64() / 1e9);
                let t = Instant::now();
                for _ in 0..iters {
                    run_arch(l, &shape, &mut out_b, &x, &packed);
                }
                gb.push(l.macs() * iters as f64 / t.elapsed().as_secs_f64() / 1e9);
            }
            let ratios: Vec<f64> = ga.iter().zip(&gb).map(|(a, b)| a / b).collect();
            let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            let (ba, bb) = (best(&ga), best(&gb));
            let (ma, mb, mr) = (
                median(&mut ga),
                median(&mut gb),
                median(&mut ratios.clone()),
            );
            let (row_w, rows, last_w) = l.rows();
            let bytes: usize = {
                let (m, rem) = (l.m(), l.cout_g % l.m());
                [m, rem]
                    .into_iter()
                    .filter(|&mt| mt > 0)
                    .flat_map(|mt| [row_w, last_w].map(|n| (mt, n)))
                    .map(|(mt, n)| {
                        assemble(&TileSpec {
                            cin: l.cin_g,
                            mt,
                            nv,
                            plane: l.plane,
                            n,
                            relu: l.relu,
                        })
                        .map_or(0, |b| b.len())
                    })
                    .sum()
            };
            println!(
                "| {} | {row_w} x {rows} (last {last_w}) | {ma:.1} ({ba:.1}) | {mb:.1} ({bb:.1}) | {mr:.2} | {bytes} B, {:.2} ms |",
                l.name,
                build.as_secs_f64() * 1e3
            );
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, start.elapsed().as_secs_f64());
        println!("uptime after: {}", shell("uptime"));
        println!(
            "this process ran {:.0}% of the wall time ({cpu:.1} s CPU in {wall:.1} s)",
            100.0 * cpu / wall
        );
        Ok(())
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if let Err(e) = spike::main() {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("iced_spike: {msg}");
        std::process::exit(1);
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("iced_spike runs on x86-64 only");
}
