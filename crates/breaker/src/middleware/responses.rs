//! How a response the inner service returned (`Ok`) counts: by default every one is a
//! success; a [`ClassifyResponse`] can count some as failures (an HTTP 503, a reply that
//! says "overloaded") or leave them out.

use crate::breaker::Outcome;

/// Decides how a response counts for the breaker.
pub trait ClassifyResponse<Res> {
    /// The outcome `response` records.
    fn outcome(&self, response: &Res) -> Outcome;
}

/// Every response is a success (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllOk;

impl<Res> ClassifyResponse<Res> for AllOk {
    #[inline]
    fn outcome(&self, _response: &Res) -> Outcome {
        Outcome::Success
    }
}

impl<Res, F> ClassifyResponse<Res> for F
where
    F: Fn(&Res) -> Outcome,
{
    #[inline]
    fn outcome(&self, response: &Res) -> Outcome {
        self(response)
    }
}
