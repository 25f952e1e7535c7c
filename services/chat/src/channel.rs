//! [`GrpcChannel`] behind a concrete error type. Generated clients over the boxed
//! channel error (`Box<dyn Error + Send + Sync>`) trip a higher-ranked lifetime
//! inference limit when their futures must be `Send` inside async code ("implementation
//! of `From` is not general enough"); a concrete error type has no lifetime to erase.

use std::task::{Context, Poll};

use confab_common::GrpcChannel;
use confab_common::channel::BoxError;
use futures::future::BoxFuture;
use tower::Service;

#[derive(Clone)]
pub struct Channel(GrpcChannel);

impl Channel {
    pub fn new(inner: GrpcChannel) -> Self {
        Self(inner)
    }
}

#[derive(Debug)]
pub struct ChannelError(BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

impl Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = ChannelError;
    type Future = BoxFuture<'static, Result<Self::Response, ChannelError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        self.0.poll_ready(cx).map_err(ChannelError)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move { fut.await.map_err(ChannelError) })
    }
}
