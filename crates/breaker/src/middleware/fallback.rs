use sssonector_core::{BoxError, CircuitOpen};

/// Answers a request the breaker rejected, for graceful degradation (a cached value, a default).
///
/// Closures `Fn(Req, CircuitOpen) -> Result<Res, BoxError>` implement it.
pub trait Fallback<Req, Res> {
    /// The response (or error) for a rejected `request`.
    ///
    /// # Errors
    ///
    /// Whatever the caller should see instead; [`NoFallback`] returns the [`CircuitOpen`].
    fn fallback(&self, request: Req, open: CircuitOpen) -> Result<Res, BoxError>;
}

impl<Req, Res, F> Fallback<Req, Res> for F
where
    F: Fn(Req, CircuitOpen) -> Result<Res, BoxError>,
{
    fn fallback(&self, request: Req, open: CircuitOpen) -> Result<Res, BoxError> {
        self(request, open)
    }
}

/// No fallback: a rejected request fails with [`CircuitOpen`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFallback;

impl<Req, Res> Fallback<Req, Res> for NoFallback {
    fn fallback(&self, _request: Req, open: CircuitOpen) -> Result<Res, BoxError> {
        Err(Box::new(open))
    }
}
