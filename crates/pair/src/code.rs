//! The one-time code the secondary shows and the operator types on the primary.
//!
//! Fifteen decimal digits in three groups of five, e.g. `48213-09375-56204`: fourteen random
//! digits (46.5 bits) and a Damm check digit. Digits because they are typed on any keyboard
//! and read aloud without ambiguity. The check digit catches every single wrong digit and every
//! swap of two neighbours on the primary *before* it connects, so a typo does not use up the
//! code (the acceptor gives each code exactly one confirmation attempt).
//!
//! Why 46 bits are plenty: SPAKE2 gives an attacker no offline test of guesses, neither from a
//! recording nor from talking to either side; each attempt must be made online against the
//! waiting acceptor, and the first failed attempt ends the acceptor (a new code is needed). So
//! the chance that an attacker pairs with a node is one guess in 10^14 per code shown.

use ring::rand::SecureRandom;
use std::fmt;
use zeroize::Zeroize;

/// Random digits in a code.
pub const RANDOM_DIGITS: usize = 14;
/// Digits in a code, the check digit included.
pub const CODE_DIGITS: usize = RANDOM_DIGITS + 1;
const GROUP: usize = 5;

/// A one-time pairing code: 15 ASCII digits, the last one the Damm check digit of the others.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    digits: [u8; CODE_DIGITS],
}

impl Drop for Code {
    fn drop(&mut self) {
        self.digits.zeroize();
    }
}

/// Why a typed code was not accepted (nothing was sent: the code is still valid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error(
        "a one-time code has {CODE_DIGITS} digits (three groups of five, e.g. 48213-09375-56204); this one has {0}"
    )]
    Length(usize),
    #[error("a one-time code holds only digits (and spaces or dashes between groups); found {0:?}")]
    NotDigit(char),
    #[error(
        "this code has a typo (its last digit does not check); nothing was sent and the code is still valid: type it again"
    )]
    Typo,
    #[error("the system random number generator failed")]
    Random,
}

/// The Damm algorithm's quasigroup of order 10 (weakly totally anti-symmetric): the check digit
/// catches all single-digit errors and all adjacent transpositions.
const DAMM: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

/// The Damm interim digit of ASCII digits (0 for a valid code including its check digit).
fn damm(digits: &[u8]) -> u8 {
    digits.iter().fold(0u8, |interim, d| {
        DAMM[interim as usize][(d - b'0') as usize]
    })
}

impl Code {
    /// A fresh code from `rng` (ring's `SystemRandom` in the CLI). Each digit comes from a
    /// byte below 250 (rejection sampling), so every digit is uniform.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Code, CodeError> {
        let mut digits = [0u8; CODE_DIGITS];
        let mut filled = 0;
        let mut pool = [0u8; 32];
        // 32 bytes give 14 usable bytes with overwhelming probability; the loop is bounded anyway.
        for _ in 0..16 {
            rng.fill(&mut pool).map_err(|_| CodeError::Random)?;
            for &b in &pool {
                if filled < RANDOM_DIGITS && b < 250 {
                    digits[filled] = b'0' + b % 10;
                    filled += 1;
                }
            }
            if filled == RANDOM_DIGITS {
                break;
            }
        }
        pool.zeroize();
        if filled < RANDOM_DIGITS {
            return Err(CodeError::Random);
        }
        digits[RANDOM_DIGITS] = b'0' + damm(&digits[..RANDOM_DIGITS]);
        Ok(Code { digits })
    }

    /// Reads a typed code: digits with any spaces, dashes or dots between them; checks the
    /// length and the check digit.
    pub fn parse(text: &str) -> Result<Code, CodeError> {
        let mut digits = [0u8; CODE_DIGITS];
        let mut count = 0usize;
        for c in text.trim().chars() {
            match c {
                '0'..='9' => {
                    if count < CODE_DIGITS {
                        digits[count] = c as u8;
                    }
                    count += 1;
                }
                ' ' | '-' | '.' | '\t' => {}
                other => return Err(CodeError::NotDigit(other)),
            }
        }
        if count != CODE_DIGITS {
            digits.zeroize();
            return Err(CodeError::Length(count));
        }
        let code = Code { digits };
        if damm(&code.digits) != 0 {
            return Err(CodeError::Typo);
        }
        Ok(code)
    }

    /// The bytes SPAKE2 uses as its password: the 15 digits without separators.
    pub(crate) fn password(&self) -> &[u8] {
        &self.digits
    }
}

/// Shown grouped: `48213-09375-56204`.
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.digits.chunks(GROUP).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // Digits are ASCII by construction.
            for &d in group {
                write!(f, "{}", d as char)?;
            }
        }
        Ok(())
    }
}

/// Never printed by accident (logs, `{:?}` of a state).
impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(redacted)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    #[test]
    fn generated_codes_parse_back_and_differ() {
        let rng = SystemRandom::new();
        let a = Code::generate(&rng).unwrap();
        let b = Code::generate(&rng).unwrap();
        assert_ne!(a, b);
        let shown = a.to_string();
        assert_eq!(shown.len(), 17, "{shown}");
        assert_eq!(shown.matches('-').count(), 2);
        assert_eq!(Code::parse(&shown).unwrap(), a);
        // Spaces instead of dashes, surrounding whitespace, no separators at all.
        assert_eq!(
            Code::parse(&format!("  {}\n", shown.replace('-', " "))).unwrap(),
            a
        );
        assert_eq!(Code::parse(&shown.replace('-', "")).unwrap(), a);
        assert_eq!(format!("{a:?}"), "Code(redacted)");
    }

    #[test]
    fn wrong_shapes_are_named() {
        assert_eq!(Code::parse("1234"), Err(CodeError::Length(4)));
        assert_eq!(Code::parse(""), Err(CodeError::Length(0)));
        assert_eq!(Code::parse(&"1".repeat(40)), Err(CodeError::Length(40)));
        assert_eq!(
            Code::parse("12345-6789x-12345"),
            Err(CodeError::NotDigit('x'))
        );
        let e = Code::parse("1234").unwrap_err().to_string();
        assert!(e.contains("15 digits"), "{e}");
    }

    proptest! {
        #[test]
        fn every_single_digit_typo_is_caught(seed in proptest::array::uniform14(0u8..10), at in 0usize..CODE_DIGITS, delta in 1u8..10) {
            let mut digits = [0u8; CODE_DIGITS];
            for (i, d) in seed.iter().enumerate() {
                digits[i] = b'0' + d;
            }
            digits[RANDOM_DIGITS] = b'0' + damm(&digits[..RANDOM_DIGITS]);
            let good = std::str::from_utf8(&digits).unwrap().to_string();
            prop_assert!(Code::parse(&good).is_ok());
            let mut bad = digits;
            bad[at] = b'0' + (bad[at] - b'0' + delta) % 10;
            prop_assert_eq!(Code::parse(std::str::from_utf8(&bad).unwrap()), Err(CodeError::Typo));
        }

        #[test]
        fn every_adjacent_swap_is_caught(seed in proptest::array::uniform14(0u8..10), at in 0usize..RANDOM_DIGITS) {
            let mut digits = [0u8; CODE_DIGITS];
            for (i, d) in seed.iter().enumerate() {
                digits[i] = b'0' + d;
            }
            digits[RANDOM_DIGITS] = b'0' + damm(&digits[..RANDOM_DIGITS]);
            prop_assume!(digits[at] != digits[at + 1]);
            let mut bad = digits;
            bad.swap(at, at + 1);
            prop_assert_eq!(Code::parse(std::str::from_utf8(&bad).unwrap()), Err(CodeError::Typo));
        }

        #[test]
        fn any_text_parses_or_errs_without_panic(text in ".{0,64}") {
            let _ = Code::parse(&text);
        }
    }
}
