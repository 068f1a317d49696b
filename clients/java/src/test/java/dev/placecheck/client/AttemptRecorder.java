package dev.placecheck.client;

import io.grpc.Attributes;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientStreamTracer;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * Records every attempt gRPC makes (retries included): when it sent its headers (gRPC creates a
 * retry's stream before its backoff, and starts it after) and its connection's local address.
 */
final class AttemptRecorder implements ClientInterceptor {
  final List<SocketAddress> localAddresses = new CopyOnWriteArrayList<>();
  final List<Long> attemptNanos = new CopyOnWriteArrayList<>();

  private final ClientStreamTracer.Factory tracers = new ClientStreamTracer.Factory() {
    @Override
    public ClientStreamTracer newClientStreamTracer(ClientStreamTracer.StreamInfo info, Metadata headers) {
      return new ClientStreamTracer() {
        @Override
        public void outboundHeaders() {
          attemptNanos.add(System.nanoTime());
        }

        @Override
        public void streamCreated(Attributes transportAttributes, Metadata headers) {
          SocketAddress local = transportAttributes.get(Grpc.TRANSPORT_ATTR_LOCAL_ADDR);
          if (local != null) {
            localAddresses.add(local);
          }
        }
      };
    }
  };

  @Override
  public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
      MethodDescriptor<ReqT, RespT> method, CallOptions callOptions, Channel next) {
    return next.newCall(method, callOptions.withStreamTracerFactory(tracers));
  }

  int attempts() {
    return attemptNanos.size();
  }

  void clear() {
    localAddresses.clear();
    attemptNanos.clear();
  }
}
