//! nom's error plumbing for untrusted binary and text input: a failure keeps the input where it
//! happened, so the caller can turn it into a byte offset, and says in words what was expected.
//! The `.hsnap` reader and the V8 importer share it.

use std::borrow::Cow;

use nom::IResult;
use nom::error::{ErrorKind, ParseError};

pub type In<'a> = &'a [u8];

/// A parse failure: the input where it happened and what was expected there.
#[derive(Debug)]
pub struct Fail<'a> {
    pub at: In<'a>,
    pub what: Cow<'static, str>,
}

impl<'a> ParseError<In<'a>> for Fail<'a> {
    fn from_error_kind(at: In<'a>, kind: ErrorKind) -> Self {
        Fail { at, what: format!("malformed input ({kind:?})").into() }
    }

    fn append(_: In<'a>, _: ErrorKind, other: Self) -> Self {
        other
    }
}

pub type Res<'a, T> = IResult<In<'a>, T, Fail<'a>>;

/// Fails at `at`: the parse stops there (nom's `Failure`, not a recoverable `Error`).
pub fn fail<'a, T>(at: In<'a>, what: impl Into<Cow<'static, str>>) -> Res<'a, T> {
    Err(failure(at, what))
}

pub fn failure<'a>(at: In<'a>, what: impl Into<Cow<'static, str>>) -> nom::Err<Fail<'a>> {
    nom::Err::Failure(Fail { at, what: what.into() })
}
