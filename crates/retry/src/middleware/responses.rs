//! How a response the inner service returned (`Ok`) is judged: by default every one is final;
//! a [`ClassifyResponse`] can ask for another attempt (an HTTP 503, a reply saying
//! "overloaded"), optionally not before a `Retry-After` the response carries.

use std::time::Duration;

/// What a response means for the retry loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseVerdict {
    /// The response is the answer: return it.
    Accept,
    /// A transient failure: try again after the policy's backoff.
    Retry,
    /// A transient failure that asks for a wait (a `Retry-After`), treated as the policy's
    /// [`RetryAfterPolicy`](crate::RetryAfterPolicy) says.
    RetryAfter(Duration),
}

/// Judges the responses of the inner service.
///
/// When the policy gives up on a response it asked to retry (attempts exhausted, deadline,
/// budget), the layer returns that last response as `Ok`: the caller sees what the service
/// said, as without the layer.
pub trait ClassifyResponse<Res> {
    /// The verdict on `response`.
    fn verdict(&self, response: &Res) -> ResponseVerdict;
}

/// Every response is final (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl<Res> ClassifyResponse<Res> for AcceptAll {
    #[inline]
    fn verdict(&self, _response: &Res) -> ResponseVerdict {
        ResponseVerdict::Accept
    }
}

impl<Res, F> ClassifyResponse<Res> for F
where
    F: Fn(&Res) -> ResponseVerdict,
{
    #[inline]
    fn verdict(&self, response: &Res) -> ResponseVerdict {
        self(response)
    }
}
