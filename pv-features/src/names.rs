//! Names for sets of flags: the error for a name that is not one of the known ones, and the
//! macro that gives a bitflags set its name-based API (CPUID features and hints, exits).

/// A name that is not one of the known ones; the message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`; valid: {}", valid.join(", "))]
pub struct UnknownName {
    /// What kind of name was looked up ("feature", "exit").
    pub kind: &'static str,
    /// The offending text.
    pub name: String,
    /// The valid names.
    pub valid: Vec<&'static str>,
}

impl UnknownName {
    pub(crate) fn new<T>(kind: &'static str, name: &str, table: &[(T, &'static str)]) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            valid: table.iter().map(|(_, n)| *n).collect(),
        }
    }
}

/// Gives a bitflags set with a `NAMES` table its name-based API: single-name lookup, the
/// list of names, `Display`/`FromStr` as a comma-separated list, and serde as a list of names.
macro_rules! named_flags {
    ($ty:ty, $kind:literal) => {
        impl $ty {
            /// The name of a single bit, `None` for combinations or unknown bits.
            pub fn name(self) -> Option<&'static str> {
                Self::NAMES
                    .iter()
                    .find(|(flag, _)| *flag == self)
                    .map(|(_, name)| *name)
            }

            /// Looks up a single bit by its name.
            pub fn by_name(name: &str) -> Result<Self, $crate::names::UnknownName> {
                Self::NAMES
                    .iter()
                    .find(|(_, n)| *n == name)
                    .map(|(flag, _)| *flag)
                    .ok_or_else(|| $crate::names::UnknownName::new($kind, name, Self::NAMES))
            }

            /// The names of the set's bits, in bit order.
            pub fn names(self) -> Vec<&'static str> {
                Self::NAMES
                    .iter()
                    .filter(|(flag, _)| self.contains(*flag))
                    .map(|(_, name)| *name)
                    .collect()
            }

            /// Parses a comma-separated list of names (no brackets; whitespace around names
            /// allowed); empty input is the empty set.
            pub fn parse_list(list: &str) -> Result<Self, $crate::names::UnknownName> {
                let mut set = Self::empty();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    set.insert(Self::by_name(name)?);
                }
                Ok(set)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.names().join(","))
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_list(s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.names())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let names = Vec::<String>::deserialize(deserializer)?;
                let mut set = Self::empty();
                for name in &names {
                    set.insert(Self::by_name(name).map_err(serde::de::Error::custom)?);
                }
                Ok(set)
            }
        }
    };
}
pub(crate) use named_flags;
