//! Runs an ONNX model with tract, for the peer benchmark (`bench/peer.sh`).
//!
//! `tract-runner MODEL.onnx INPUT.npy OUTPUT.npy --threads T --runs R
//! --warmup W` loads the model with the input's shape as a fixed fact,
//! optimises it, runs it `W` times unmeasured and `R` times measured, writes
//! the last output to `OUTPUT.npy` and prints `median_ms M` and
//! `times_ms t1,t2,...` on stdout (the format `bench/ort_runner.py` uses).
//!
//! With `--serve` the model stays loaded for rounds interleaved with other
//! engines, with `bench/ort_runner.py`'s protocol: after the warm-up it
//! prints `ready`, then answers each line of stdin: `time K` (K timed runs,
//! prints `times_ms ...`), `save` (writes the last output, prints `saved`)
//! and `quit`.
//!
//! The `.npy` reader and writer handle only what the benchmark exchanges:
//! little-endian `f32`, C order, version 1 or 2 headers.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, format_err, Context};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("tract-runner: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    model: String,
    input: String,
    output: String,
    threads: usize,
    runs: usize,
    warmup: usize,
    serve: bool,
}

fn parse_args() -> TractResult<Args> {
    let mut positional = Vec::new();
    let (mut threads, mut runs, mut warmup, mut serve) = (1, 20, 3, false);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> TractResult<usize> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format_err!("{name} needs a positive integer"))
        };
        match a.as_str() {
            "--threads" => threads = num("--threads")?,
            "--runs" => runs = num("--runs")?,
            "--warmup" => warmup = num("--warmup")?,
            "--serve" => serve = true,
            _ => positional.push(a),
        }
    }
    let [model, input, output]: [String; 3] = positional.try_into().map_err(|_| {
        format_err!("usage: tract-runner MODEL.onnx INPUT.npy OUTPUT.npy [--threads T] [--runs R] [--warmup W] [--serve]")
    })?;
    if threads == 0 || runs == 0 {
        bail!("--threads and --runs must be positive");
    }
    Ok(Args {
        model,
        input,
        output,
        threads,
        runs,
        warmup,
        serve,
    })
}

fn run() -> TractResult<()> {
    let args = parse_args()?;
    let (shape, data) = read_npy(Path::new(&args.input))?;
    let model = tract_onnx::onnx()
        .model_for_path(&args.model)?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: Tensor = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), data)?.into();
    let executor = if args.threads == 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(args.threads)
    };
    if args.serve {
        let run = || model.run(tvec!(input.clone().into()));
        return multithread_tract_scope(executor, || serve(&run, &args));
    }
    let (times, output) = multithread_tract_scope(executor, || -> TractResult<_> {
        let mut last = None;
        let mut times = Vec::with_capacity(args.runs);
        for i in 0..args.warmup + args.runs {
            let start = Instant::now();
            let out = model.run(tvec!(input.clone().into()))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if i >= args.warmup {
                times.push(ms);
            }
            last = Some(out);
        }
        Ok((times, last))
    })?;
    let output = output.ok_or_else(|| format_err!("no run"))?;
    let out = output[0].to_plain_array_view::<f32>()?;
    let out_shape: Vec<usize> = out.shape().to_vec();
    let out_data: Vec<f32> = out.iter().copied().collect();
    write_npy(Path::new(&args.output), &out_shape, &out_data)?;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    let list: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
    println!("median_ms {median:.4}");
    println!("times_ms {}", list.join(","));
    Ok(())
}

/// Answers `time K`, `save` and `quit` on stdin (see the module doc).
fn serve(run: &dyn Fn() -> TractResult<TVec<TValue>>, args: &Args) -> TractResult<()> {
    let mut last = None;
    for _ in 0..args.warmup {
        last = Some(run()?);
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["time", k] => {
                let k: usize = k.parse().context("`time K` needs a count")?;
                let mut times = Vec::with_capacity(k);
                for _ in 0..k {
                    let start = Instant::now();
                    last = Some(run()?);
                    times.push(format!("{:.4}", start.elapsed().as_secs_f64() * 1e3));
                }
                writeln!(stdout, "times_ms {}", times.join(","))?;
            }
            ["save"] => {
                let output = match last.take() {
                    Some(o) => o,
                    None => run()?,
                };
                let out = output[0].to_plain_array_view::<f32>()?;
                let data: Vec<f32> = out.iter().copied().collect();
                write_npy(Path::new(&args.output), out.shape(), &data)?;
                last = Some(output);
                writeln!(stdout, "saved")?;
            }
            ["quit"] => break,
            _ => bail!("unknown command `{line}`"),
        }
        stdout.flush()?;
    }
    Ok(())
}

fn read_npy(path: &Path) -> TractResult<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{} is not an .npy file", path.display());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => bail!("{}: truncated header", path.display()),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + header_len)
            .ok_or_else(|| format_err!("{}: truncated header", path.display()))?,
    )?;
    if !header.contains("'<f4'") || header.contains("True") {
        bail!(
            "{}: only little-endian f32 in C order is supported",
            path.display()
        );
    }
    let dims = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format_err!("{}: no shape", path.display()))?;
    let shape: Vec<usize> = dims
        .trim_start_matches([' ', '('])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()?;
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if data.len() != shape.iter().product::<usize>() {
        bail!(
            "{}: data does not match the shape {shape:?}",
            path.display()
        );
    }
    Ok((shape, data))
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> TractResult<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
