//! The `Ingest` service as the gRPC router sees it: the generated `IngestServer`, but with
//! a codec whose per-stream buffers start small, and whose decoder counts a message's
//! repeated fields before decoding it (`limits`), so a message over the limits is not
//! decoded whole.
//!
//! tonic's default codec gives every stream an 8 KiB decode buffer and an 8 KiB encode
//! buffer for as long as it lives. An agent sends a batch of one host sample (a few
//! hundred bytes) every few seconds and receives acks of a few bytes, so with 100 k agents
//! connected those buffers alone were most of the aggregator's memory. Here they start at
//! `STREAM_BUFFER` and grow only for a stream whose messages need more (a replay of large
//! batches); nothing else differs from the generated server.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::bytes::Buf;
use proto::v1 as wire;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstEncoder;

use super::IngestService;
use super::limits::{self, Inbound, WireLimits};
use wire::ingest_server::Ingest;

/// Where a stream's encode and decode buffers start.
const STREAM_BUFFER: usize = 512;
/// tonic's default: encoded acks are handed to HTTP/2 once this many bytes gathered.
const YIELD_THRESHOLD: usize = 32 * 1024;

const STREAM_PATH: &str = "/hostwatch.v1.Ingest/Stream";

/// The Ingest service, ready for `Server::add_service`.
#[derive(Debug, Clone)]
pub struct IngestRoute {
    service: Arc<IngestService>,
    max_decoding_message_size: usize,
}

impl IngestRoute {
    pub fn new(service: IngestService, max_decoding_message_size: usize) -> Self {
        Self {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl NamedService for IngestRoute {
    const NAME: &'static str =
        <wire::ingest_server::IngestServer<IngestService> as NamedService>::NAME;
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER, YIELD_THRESHOLD)
}

/// The codec of an agent stream: prost acks, agent messages through `limits`, small
/// starting buffers.
#[derive(Debug, Clone, Copy)]
struct AgentCodec {
    limits: WireLimits,
}

impl Codec for AgentCodec {
    type Encode = wire::AggregatorMessage;
    type Decode = Inbound;
    type Encoder = ProstEncoder<wire::AggregatorMessage>;
    type Decoder = InboundDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        InboundDecoder {
            limits: self.limits,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InboundDecoder {
    limits: WireLimits,
}

impl Decoder for InboundDecoder {
    type Item = Inbound;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, Status> {
        let len = src.remaining();
        // tonic hands over one whole message, contiguous in its buffer; the copy is only
        // for a buffer that is not.
        let decoded = if src.chunk().len() == len {
            let decoded = limits::decode(src.chunk(), &self.limits);
            src.advance(len);
            decoded
        } else {
            limits::decode(&src.copy_to_bytes(len), &self.limits)
        };
        decoded
            .map(Some)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// One call of `Stream`.
struct StreamCall(Arc<IngestService>);

impl StreamingService<Inbound> for StreamCall {
    type Response = wire::AggregatorMessage;
    type ResponseStream = <IngestService as Ingest>::StreamStream;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Inbound>>) -> Self::Future {
        let service = Arc::clone(&self.0);
        // A panic while reading the Hello ends this stream only (`panics`).
        Box::pin(crate::panics::Contained::new(async move {
            service.serve(request).await
        }))
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for IngestRoute
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != STREAM_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let codec = AgentCodec {
            limits: self.service.wire_limits(),
        };
        let call = StreamCall(Arc::clone(&self.service));
        let max_decoding_message_size = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(codec)
                .apply_max_message_size_config(Some(max_decoding_message_size), None);
            Ok(grpc.streaming(call, request).await)
        })
    }
}
