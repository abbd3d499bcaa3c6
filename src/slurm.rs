//! What a Slurm job tells its tasks through the environment: the shard of
//! an array task (`--shard slurm`) and the CPUs of a task (the default of
//! `--jobs`).

use anyhow::{bail, Context};
use shufflekit_search::Shard;

/// The shard of this array task: `SLURM_ARRAY_TASK_ID` counted from
/// `SLURM_ARRAY_TASK_MIN` (an array need not start at 0) in steps of
/// `SLURM_ARRAY_TASK_STEP`, out of `SLURM_ARRAY_TASK_COUNT`. `var` looks a
/// variable up (`std::env::var` in the CLI).
pub fn shard_from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
    let number = |name: &str, required: bool| -> anyhow::Result<Option<u64>> {
        match var(name) {
            None if required => bail!(
                "--shard slurm: {name} is not set; this is not a task of a Slurm job array \
                 (sbatch --array=0-N). Outside an array give --shard INDEX/COUNT"
            ),
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).with_context(|| {
                format!("--shard slurm: {name}=`{v}` is not a whole number of 0 or more")
            }),
        }
    };
    let id = number("SLURM_ARRAY_TASK_ID", true)?.unwrap_or(0);
    let count = number("SLURM_ARRAY_TASK_COUNT", true)?.unwrap_or(0);
    let min = number("SLURM_ARRAY_TASK_MIN", false)?.unwrap_or(0);
    let step = number("SLURM_ARRAY_TASK_STEP", false)?.unwrap_or(1);
    let max = number("SLURM_ARRAY_TASK_MAX", false)?;
    if count == 0 {
        bail!("--shard slurm: SLURM_ARRAY_TASK_COUNT is 0");
    }
    if step == 0 {
        bail!("--shard slurm: SLURM_ARRAY_TASK_STEP is 0");
    }
    let not_a_range = |why: String| {
        anyhow::anyhow!(
            "--shard slurm: {why}; the array must be a range START-END[:STEP] \
             (e.g. --array=0-15) so that each task maps to one shard; \
             otherwise give --shard INDEX/COUNT yourself"
        )
    };
    if let Some(max) = max {
        let values = max.checked_sub(min).map(|d| d / step + 1);
        if values != Some(count) {
            return Err(not_a_range(format!(
                "tasks {min} to {max} in steps of {step} are not the {count} tasks of \
                 SLURM_ARRAY_TASK_COUNT"
            )));
        }
    }
    let offset = id
        .checked_sub(min)
        .filter(|d| d % step == 0)
        .ok_or_else(|| {
            not_a_range(format!(
                "task {id} is not on the range from {min} in steps of {step}"
            ))
        })?;
    let index = offset / step;
    if index >= count {
        return Err(not_a_range(format!(
            "task {id} is past the {count} tasks of the array"
        )));
    }
    Ok(Shard { index, count })
}

/// `SLURM_CPUS_PER_TASK` (set when the job asked for `--cpus-per-task`),
/// the default number of workers inside a Slurm job.
pub fn cpus_per_task(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<usize>> {
    match var("SLURM_CPUS_PER_TASK") {
        None => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => bail!("SLURM_CPUS_PER_TASK=`{v}` is not a positive number of CPUs; give --jobs N"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn array_tasks_map_to_shards_from_the_arrays_start() {
        let shard = |pairs: &[(&str, &str)]| shard_from_env(env(pairs));
        let s = shard(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ])
        .unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        // --array=1-3: task 1 is shard 0.
        let s = shard(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ])
        .unwrap();
        assert_eq!((s.index, s.count), (0, 3));
        // --array=10-20:5: task 20 is shard 2 of 3.
        let s = shard(&[
            ("SLURM_ARRAY_TASK_ID", "20"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_MAX", "20"),
            ("SLURM_ARRAY_TASK_STEP", "5"),
        ])
        .unwrap();
        assert_eq!((s.index, s.count), (2, 3));
    }

    #[test]
    fn bad_or_missing_variables_are_clear_errors() {
        let err = |pairs: &[(&str, &str)]| shard_from_env(env(pairs)).unwrap_err().to_string();
        assert!(err(&[]).contains("SLURM_ARRAY_TASK_ID is not set"));
        assert!(err(&[("SLURM_ARRAY_TASK_ID", "0")]).contains("SLURM_ARRAY_TASK_COUNT is not set"));
        assert!(err(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "3")
        ])
        .contains("SLURM_ARRAY_TASK_ID=`x` is not a whole number"));
        assert!(err(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "3")
        ])
        .contains("past the 3 tasks"));
        // --array=1,4,9: not a range.
        assert!(err(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
        ])
        .contains("must be a range"));
        assert!(err(&[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "0")
        ])
        .contains("COUNT is 0"));
    }

    #[test]
    fn cpus_per_task_is_read_when_set() {
        assert_eq!(cpus_per_task(env(&[])).unwrap(), None);
        assert_eq!(
            cpus_per_task(env(&[("SLURM_CPUS_PER_TASK", "4")])).unwrap(),
            Some(4)
        );
        for bad in ["0", "two", ""] {
            let e = cpus_per_task(env(&[("SLURM_CPUS_PER_TASK", bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a positive number"), "{e}");
        }
    }
}
