//! Which files to mirror: PEP 508 requirements (parsed by `pep508_rs`, versions compared by
//! `pep440_rs`) applied to the files of a project page.
//!
//! A file is selected when its project is named by a requirement (or when there are no requirements:
//! then every project is) and its version (from its file name) matches that requirement's specifiers;
//! with several requirements for one project, matching any of them is enough. On top of that:
//!
//! * **Pre-releases** (and dev releases) only with [`Selector::with_pre`], or when the requirement
//!   itself names one (`==2.0b1`, `>=2.0a1`), as PEP 440 says.
//! * **Yanked** files (PEP 592) only when the requirement pins their version with `==` or `===`.
//! * **Requires-Python**: with a target Python ([`Selector::with_python`]), a file whose
//!   `requires-python` excludes it is skipped; one that cannot be parsed is kept (pip ignores it too).
//!
//! Markers and extras of a requirement are not evaluated (a mirror serves every environment); a URL
//! requirement is refused.

use std::str::FromStr;

use pep440_rs::{Operator, Version, VersionSpecifiers};
use pep508_rs::{Requirement, VersionOrUrl};

use crate::dist::{DistFilename, normalize};
use crate::error::{Error, Result};
use crate::page::DistFile;

/// Why a file of a selected project was left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its version does not match the requirement.
    Version,
    /// A pre-release, not asked for.
    PreRelease,
    /// Yanked, and not pinned with `==`.
    Yanked(String),
    /// Its `requires-python` excludes the target Python.
    RequiresPython(String),
    /// Its file name (or version) cannot be parsed.
    BadFilename(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Version => f.write_str("version not requested"),
            SkipReason::PreRelease => f.write_str("pre-release (not asked for)"),
            SkipReason::Yanked(reason) if reason.is_empty() => f.write_str("yanked"),
            SkipReason::Yanked(reason) => write!(f, "yanked: {reason}"),
            SkipReason::RequiresPython(spec) => write!(f, "requires Python {spec}"),
            SkipReason::BadFilename(reason) => f.write_str(reason),
        }
    }
}

/// Requirements and the rules that go with them.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
    pre: bool,
    python: Option<Version>,
}

impl Selector {
    /// Parses requirements (`"celery>=3.0.15"`, `"tiny-one==1.0"`, `"pkg"`). None at all selects
    /// every project.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequirement`] for one that is not PEP 508, or names a URL.
    pub fn new<S: AsRef<str>>(requirements: &[S]) -> Result<Selector> {
        let mut parsed = Vec::with_capacity(requirements.len());
        for text in requirements {
            let text = text.as_ref();
            let requirement = Requirement::from_str(text).map_err(|e| Error::InvalidRequirement {
                requirement: text.to_owned(),
                reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
            })?;
            if matches!(requirement.version_or_url, Some(VersionOrUrl::Url(_))) {
                return Err(Error::InvalidRequirement {
                    requirement: text.to_owned(),
                    reason: "a URL requirement names no index version to mirror".into(),
                });
            }
            parsed.push(requirement);
        }
        Ok(Selector {
            requirements: parsed,
            pre: false,
            python: None,
        })
    }

    /// Includes pre-releases and dev releases.
    #[must_use]
    pub fn with_pre(mut self, pre: bool) -> Self {
        self.pre = pre;
        self
    }

    /// Skips files whose `requires-python` excludes this Python version.
    #[must_use]
    pub fn with_python(mut self, python: Option<Version>) -> Self {
        self.python = python;
        self
    }

    /// The projects the requirements name (normalised, sorted, unique); `None` means every project.
    #[must_use]
    pub fn projects(&self) -> Option<Vec<String>> {
        if self.requirements.is_empty() {
            return None;
        }
        let mut names: Vec<String> = self.requirements.iter().map(|r| r.name.to_string()).collect();
        names.sort();
        names.dedup();
        Some(names)
    }

    /// Splits a project's files into the selected ones and the skipped ones (with the reason).
    #[must_use]
    pub fn select(&self, project: &str, files: &[DistFile]) -> (Vec<DistFile>, Vec<(DistFile, SkipReason)>) {
        let wanted = normalize(project);
        let requirements: Vec<&Requirement> = self
            .requirements
            .iter()
            .filter(|r| normalize(r.name.as_ref()) == wanted)
            .collect();
        let mut chosen = Vec::new();
        let mut skipped = Vec::new();
        for file in files {
            match self.judge(project, &requirements, file) {
                None => chosen.push(file.clone()),
                Some(reason) => skipped.push((file.clone(), reason)),
            }
        }
        (chosen, skipped)
    }

    fn judge(&self, project: &str, requirements: &[&Requirement], file: &DistFile) -> Option<SkipReason> {
        let version =
            match DistFilename::parse(&file.filename, Some(project)).and_then(|d| d.parsed_version()) {
                Ok(version) => version,
                Err(e) => return Some(SkipReason::BadFilename(e.to_string())),
            };
        let specifiers: Vec<Option<&VersionSpecifiers>> = if requirements.is_empty() {
            vec![None]
        } else {
            requirements
                .iter()
                .map(|r| match &r.version_or_url {
                    Some(VersionOrUrl::VersionSpecifier(s)) => Some(s),
                    _ => None,
                })
                .collect()
        };
        let matching: Vec<Option<&VersionSpecifiers>> = specifiers
            .iter()
            .copied()
            .filter(|s| s.is_none_or(|s| s.contains(&version)))
            .collect();
        if matching.is_empty() {
            return Some(SkipReason::Version);
        }
        let names_prerelease = |s: Option<&VersionSpecifiers>| {
            s.is_some_and(|s| s.iter().any(pep440_rs::VersionSpecifier::any_prerelease))
        };
        if version.any_prerelease() && !self.pre && !matching.iter().copied().any(names_prerelease) {
            return Some(SkipReason::PreRelease);
        }
        if let Some(reason) = &file.yanked {
            let pinned = matching.iter().flatten().any(|s| {
                s.iter().any(|v| {
                    matches!(v.operator(), Operator::Equal | Operator::ExactEqual) && v.contains(&version)
                })
            });
            if !pinned {
                return Some(SkipReason::Yanked(reason.clone()));
            }
        }
        if let (Some(python), Some(requires)) = (&self.python, &file.requires_python)
            && let Ok(spec) = VersionSpecifiers::from_str(requires)
            && !spec.contains(python)
        {
            return Some(SkipReason::RequiresPython(requires.clone()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, yanked: Option<&str>, requires_python: Option<&str>) -> DistFile {
        DistFile {
            filename: name.into(),
            url: url::Url::parse(&format!("https://x.example/{name}")).unwrap(),
            sha256: None,
            requires_python: requires_python.map(Into::into),
            yanked: yanked.map(Into::into),
            core_metadata: None,
            size: None,
        }
    }

    fn names(selected: &[DistFile]) -> Vec<&str> {
        selected.iter().map(|f| f.filename.as_str()).collect()
    }

    #[test]
    fn specifiers_pre_releases_yanks_and_python() {
        let files = [
            file("a-1.0.tar.gz", None, None),
            file("a-1.5.tar.gz", Some("broken"), None),
            file("a-2.0b1.tar.gz", None, None),
            file("a-2.0.tar.gz", None, Some(">=3.99")),
            file("a-2.1.tar.gz", None, Some("not a specifier")),
            file("a-oops.tar.gz", None, None),
        ];
        let (chosen, skipped) = Selector::new(&["A>=1.0"]).unwrap().select("a", &files);
        assert_eq!(names(&chosen), ["a-1.0.tar.gz", "a-2.0.tar.gz", "a-2.1.tar.gz"]);
        assert_eq!(skipped[0].1, SkipReason::Yanked("broken".into()));
        assert_eq!(skipped[1].1, SkipReason::PreRelease);
        assert!(matches!(skipped[2].1, SkipReason::BadFilename(_)));

        let with = Selector::new(&["a"])
            .unwrap()
            .with_pre(true)
            .with_python(Some(Version::from_str("3.11").unwrap()));
        let (chosen, skipped) = with.select("a", &files);
        assert_eq!(names(&chosen), ["a-1.0.tar.gz", "a-2.0b1.tar.gz", "a-2.1.tar.gz"]);
        assert!(
            skipped
                .iter()
                .any(|(_, r)| *r == SkipReason::RequiresPython(">=3.99".into()))
        );

        // A pin takes a yanked file and a named pre-release; two requirements are a union.
        let (chosen, _) = Selector::new(&["a==1.5", "a==2.0b1"])
            .unwrap()
            .select("a", &files);
        assert_eq!(names(&chosen), ["a-1.5.tar.gz", "a-2.0b1.tar.gz"]);
        let (chosen, _) = Selector::new(&["a>=1.2"]).unwrap().select("a", &files[..2]);
        assert!(chosen.is_empty());

        // No requirement: every project, final releases only.
        let (chosen, _) = Selector::new::<&str>(&[]).unwrap().select("a", &files);
        assert_eq!(names(&chosen), ["a-1.0.tar.gz", "a-2.0.tar.gz", "a-2.1.tar.gz"]);
    }

    #[test]
    fn bad_requirements_are_typed_errors() {
        for bad in ["", ">=1.0", "a>=", "a @ https://x.example/a.whl", "a[x"] {
            assert!(
                matches!(Selector::new(&[bad]), Err(Error::InvalidRequirement { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            Selector::new(&["B_c>1", "a", "b-c<3"]).unwrap().projects(),
            Some(vec!["a".to_owned(), "b-c".to_owned()])
        );
    }
}
