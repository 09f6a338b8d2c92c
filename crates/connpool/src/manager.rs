//! What the pool asks of the code that knows how to connect.

use std::fmt::Debug;
use std::future::Future;

/// Makes and checks connections to endpoints. The pool owns one and shares it between tasks.
///
/// ```
/// use std::io;
/// use sssonector_connpool::Manager;
/// use tokio::net::TcpStream;
///
/// struct Tcp;
///
/// impl Manager for Tcp {
///     type Endpoint = std::net::SocketAddr;
///     type Connection = TcpStream;
///     type Error = io::Error;
///
///     async fn connect(&self, endpoint: &Self::Endpoint) -> io::Result<TcpStream> {
///         let stream = TcpStream::connect(endpoint).await?;
///         stream.set_nodelay(true)?;
///         Ok(stream)
///     }
///
///     async fn check(&self, stream: &mut TcpStream) -> io::Result<()> {
///         // A real check would send a ping; a closed peer shows here as readable EOF.
///         stream.peer_addr().map(drop)
///     }
/// }
/// ```
pub trait Manager: Send + Sync + 'static {
    /// Where to connect: an address, a URL, a server name and port.
    type Endpoint: Debug + Send + Sync + 'static;
    /// The connection the pool keeps.
    type Connection: Send + 'static;
    /// Why connecting or checking failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens a new connection to `endpoint`. The pool bounds it by its connect timeout.
    fn connect(
        &self,
        endpoint: &Self::Endpoint,
    ) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Checks that an idle connection still works (on checkout, and periodically, as
    /// configured). A connection that fails is closed and replaced.
    fn check(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A cheap test when a connection comes back: true closes it instead of keeping it.
    /// Default: never broken.
    fn is_broken(&self, connection: &mut Self::Connection) -> bool {
        let _ = connection;
        false
    }
}
