package dev.placecheck.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.RetryInfo;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientStreamTracer;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.protobuf.ProtoUtils;

/**
 * Makes gRPC's own retry honour a google.rpc.RetryInfo: gRPC reads the delay before the next
 * attempt from the {@code grpc-retry-pushback-ms} trailer only, so each attempt's tracer copies
 * RetryInfo's delay there when the sidecar sent none. Stream tracers see an attempt's trailers
 * before the retry decision (interceptors see only the last attempt's), so no loop of our own
 * retries anything.
 */
final class RetryInfoPushback implements ClientInterceptor {
  static final Metadata.Key<String> PUSHBACK_MS =
      Metadata.Key.of("grpc-retry-pushback-ms", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<com.google.rpc.Status> STATUS_DETAILS = Metadata.Key.of(
      "grpc-status-details-bin", ProtoUtils.metadataMarshaller(com.google.rpc.Status.getDefaultInstance()));

  private static final ClientStreamTracer ATTEMPT_TRACER = new ClientStreamTracer() {
    @Override
    public void inboundTrailers(Metadata trailers) {
      addPushback(trailers);
    }
  };
  private static final ClientStreamTracer.Factory TRACERS = new ClientStreamTracer.Factory() {
    @Override
    public ClientStreamTracer newClientStreamTracer(ClientStreamTracer.StreamInfo info, Metadata headers) {
      return ATTEMPT_TRACER;
    }
  };

  @Override
  public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
      MethodDescriptor<ReqT, RespT> method, CallOptions callOptions, Channel next) {
    return next.newCall(method, callOptions.withStreamTracerFactory(TRACERS));
  }

  static void addPushback(Metadata trailers) {
    if (trailers.containsKey(PUSHBACK_MS)) {
      return;
    }
    com.google.rpc.Status status = trailers.get(STATUS_DETAILS);
    // A pushback makes gRPC retry whatever the code, so only for the codes the policy retries.
    if (status == null || !Channels.RETRYABLE_CODES.contains(Status.fromCodeValue(status.getCode()).getCode())) {
      return;
    }
    for (Any detail : status.getDetailsList()) {
      if (detail.is(RetryInfo.class)) {
        try {
          com.google.protobuf.Duration delay = detail.unpack(RetryInfo.class).getRetryDelay();
          long millis = delay.getSeconds() * 1000 + delay.getNanos() / 1_000_000;
          trailers.put(PUSHBACK_MS, Long.toString(Math.min(Math.max(millis, 0), Integer.MAX_VALUE)));
        } catch (InvalidProtocolBufferException malformed) {
          // No usable delay: gRPC's own backoff applies.
        }
        return;
      }
    }
  }
}
