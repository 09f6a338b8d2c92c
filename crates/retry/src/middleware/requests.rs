//! How the layer gets a request for the next attempt: by default it clones the request; a
//! [`CloneRequest`] can clone only some requests and decline the rest, so a request type that
//! is not `Clone` (an `http::Request` with a streaming body) can still be retried when it can
//! be repeated, and is sent once, with its failure final, when it cannot.

/// Makes the copy of a request that a retry sends.
pub trait CloneRequest<Req> {
    /// A copy of `request` for a later attempt, or `None` when it cannot be repeated (its
    /// failure is then final, given up with
    /// [`GiveUpReason::NotRepeatable`](crate::GiveUpReason::NotRepeatable)).
    fn clone_request(&self, request: &Req) -> Option<Req>;
}

/// Clones every request with `Clone` (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneAll;

impl<Req: Clone> CloneRequest<Req> for CloneAll {
    #[inline]
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    #[inline]
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}
