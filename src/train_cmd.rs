//! `shufflekit train`: trains a spec on a dataset (the proxy task of
//! `shufflekit_train::proxy`), with a progress bar, per-epoch loss and
//! accuracy, a plot of the curves, a checkpoint after every epoch and
//! `--resume`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use shufflekit_ir::cost::Convention;
use shufflekit_reports::curves::learning_curves;
use shufflekit_spec::Spec;
use shufflekit_train::data::{Augment, DataSource};
use shufflekit_train::fit::checkpoint_dir;
use shufflekit_train::optim::ScheduleKind;
use shufflekit_train::proxy::proxy_task;
use shufflekit_train::{Event, TrainConfig, Trainer};

/// Options of `shufflekit train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The spec file (YAML).
    spec: PathBuf,
    /// Override a parameter: `--set groups=3` (repeatable). The dataset sets
    /// `resolution`, `channels`, `classes` and `small_input`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// `mnist-sample` (the 5,000-image MNIST sample in the repository),
    /// `fashion-sample` (the 12,000-image Fashion-MNIST sample in the
    /// repository), `fashion-mnist` (Debian's `dataset-fashion-mnist`;
    /// `$SHUFFLEKIT_FASHION_MNIST` overrides its directory) or a dataset
    /// directory (IDX, CIFAR-10/100 binary, image folder).
    #[arg(long)]
    data: String,
    /// Fraction of the training set held out (per class, chosen by --seed)
    /// as a validation set, measured after every epoch next to the test
    /// set; 0 for none.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    validation: f64,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per minibatch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Weight decay of conv and linear weights.
    #[arg(long, default_value_t = 4e-5)]
    weight_decay: f32,
    /// Learning-rate decay: linear (to 0, the paper's), cosine or constant.
    #[arg(long, default_value = "linear", value_parser = ["linear", "cosine", "constant"])]
    schedule: String,
    /// Linear warm-up, in epochs.
    #[arg(long, default_value_t = 0.0, value_name = "EPOCHS")]
    warmup: f64,
    /// Random crop: pad by this many pixels and crop back (0: off).
    #[arg(long, default_value_t = 0, value_name = "PIXELS")]
    crop: usize,
    /// Random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Seed of the weights, the shuffles and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", value_parser = crate::limits::threads)]
    threads: Option<usize>,
    /// The trained weights (safetensors). The checkpoint goes to
    /// `OUT.checkpoint/`, the curves to `OUT.curves.png` / `.svg` and the
    /// per-epoch numbers to `OUT.history.json`.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Continue from `OUT.checkpoint/` (same spec, data and settings).
    #[arg(long)]
    resume: bool,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Runs `shufflekit train`.
pub fn train(args: &TrainArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let parsed = Spec::parse_file(&args.spec)?;
    let overrides = args
        .set
        .iter()
        .map(|s| shufflekit_spec::parse_override(s))
        .collect::<Result<Vec<_>, _>>()?;
    let source = DataSource::parse(&args.data);
    let split = source.load()?.hold_out(args.validation, args.seed)?;
    let task = proxy_task(&parsed, &overrides, &split, Convention::Macs)?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        schedule: ScheduleKind::from_name(&args.schedule).unwrap_or_default(),
        warmup_epochs: args.warmup,
        seed: args.seed,
        augment: Augment {
            crop_padding: args.crop,
            flip: args.flip,
        },
        ..TrainConfig::default()
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // The command trains one network: its threads are the global pool's.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
        .map_err(shufflekit_train::TrainError::Threads)?;
    let ckpt = checkpoint_dir(&args.out);
    // The held-out images are part of what the checkpoint was trained on.
    let data_name = if split.validation.is_some() {
        format!(
            "{} (validation {} held out with seed {})",
            source.describe(),
            args.validation,
            args.seed
        )
    } else {
        source.describe()
    };
    let mut trainer = if args.resume {
        Trainer::resume(&task.trained, &split, config, &ckpt, &data_name)?
    } else {
        Trainer::new(&task.trained, &split, config)?
    };
    writeln!(
        out,
        "model: {} ({} parameters); {}",
        parsed.name, task.trained_cost.params, task.description
    )?;
    writeln!(
        out,
        "data: {} ({} training, {} validation, {} test images of {:?}, {} classes)",
        split.source,
        split.train.len(),
        split.validation.as_ref().map_or(0, |v| v.len()),
        split.test.len(),
        split.shape(),
        split.classes()
    )?;
    writeln!(
        out,
        "training: {} epochs of {} steps, batch {}, lr {} ({}, warm-up {} epochs), momentum {}, weight decay {}, seed {}, {} thread(s){}",
        trainer.config().epochs,
        trainer.steps_per_epoch(),
        trainer.config().batch,
        trainer.config().lr,
        args.schedule,
        trainer.config().warmup_epochs,
        trainer.config().momentum,
        trainer.config().weight_decay,
        trainer.config().seed,
        threads,
        if args.resume {
            format!(", resumed after epoch {}", trainer.history().epochs.len())
        } else {
            String::new()
        }
    )?;
    out.flush()?;
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(trainer.steps_per_epoch() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let quiet = args.no_progress;
    let mut running = 0.0f64;
    let mut observer = |e: &Event| match e {
        Event::Step {
            epoch, step, loss, ..
        } => {
            if *step == 1 {
                bar.reset();
                bar.set_prefix(epoch.to_string());
                running = *loss;
            }
            running = 0.9 * running + 0.1 * loss;
            bar.set_position(*step as u64);
            bar.set_message(format!("loss {running:.4}"));
        }
        Event::Evaluating { .. } => bar.set_message("measuring the validation and test sets"),
        Event::Epoch(s) => {
            let val = match (s.val_loss, s.val_accuracy) {
                (Some(l), Some(a)) => format!("val loss {l:.4}, val acc {a:6.2}%, "),
                _ => String::new(),
            };
            let line = format!(
                "epoch {:>3}: train loss {:.4}, train acc {:6.2}%, {val}test loss {:.4}, test acc {:6.2}%, lr {:.5}, {:.1} s, {:.0} images/s",
                s.epoch, s.train_loss, s.train_accuracy, s.test_loss, s.test_accuracy, s.lr, s.train_seconds, s.images_per_second
            );
            if quiet {
                // Without a bar, each epoch's line goes out as it ends.
                let _ = writeln!(out, "{line}").and_then(|_| out.flush());
            } else {
                bar.println(&line);
            }
        }
    };
    let history_path = with_suffix(&args.out, ".history.json");
    let result = {
        trainer.fit(&split, &mut observer, &mut |t| {
            t.save_checkpoint(&ckpt, &data_name)?;
            let json = serde_json::to_string_pretty(t.history())
                .map_err(|e| shufflekit_train::TrainError::Internal(e.to_string()))?;
            std::fs::write(&history_path, json).map_err(|e| {
                shufflekit_train::TrainError::Checkpoint {
                    path: history_path.clone(),
                    problem: shufflekit_train::CheckpointProblem::Write(e),
                }
            })?;
            Ok(true)
        })
    };
    bar.finish_and_clear();
    result?;
    trainer
        .weights()
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let title = format!(
        "{} {} on {}",
        parsed.name,
        overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        split.name
    );
    let (png, svg) = learning_curves(
        &with_suffix(&args.out, ".curves"),
        trainer.history(),
        &title,
    )?;
    let last = trainer.history().epochs.last();
    let val = last
        .and_then(|s| s.val_accuracy)
        .map_or(String::new(), |a| format!("validation accuracy {a:.2}%, "));
    writeln!(
        out,
        "done in {:.1} s: {val}test accuracy {:.2}% (the test set is reported, not used to choose)",
        started.elapsed().as_secs_f64(),
        last.map_or(0.0, |s| s.test_accuracy)
    )?;
    writeln!(out, "weights: {}", args.out.display())?;
    writeln!(out, "checkpoint: {}", ckpt.display())?;
    writeln!(out, "history: {}", history_path.display())?;
    writeln!(out, "curves: {} {}", png.display(), svg.display())?;
    Ok(())
}
