//! Names given out so far in one model, and fresh ones that differ from
//! all of them: import names layers, export names values.

use std::collections::HashSet;

/// The names taken in one model.
#[derive(Debug, Default)]
pub(crate) struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// Marks `name` as taken.
    pub(crate) fn take(&mut self, name: impl Into<String>) {
        self.taken.insert(name.into());
    }

    /// `base`, or `base_1`, `base_2`... whichever is free; taken from then on.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while self.taken.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.taken.insert(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn a_taken_name_gets_the_next_free_number() {
        let mut names = Names::default();
        names.take("conv");
        names.take("conv_1");
        assert_eq!(names.fresh("conv"), "conv_2");
        assert_eq!(names.fresh("conv"), "conv_3");
        assert_eq!(names.fresh("relu"), "relu");
    }
}
