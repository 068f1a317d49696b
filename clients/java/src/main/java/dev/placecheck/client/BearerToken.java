package dev.placecheck.client;

import io.grpc.CallCredentials;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.concurrent.Executor;

/**
 * {@code authorization: Bearer <token>} on every call: over TLS, to a sidecar on this machine
 * (loopback or a Unix socket) in plaintext, and elsewhere in plaintext only when allowed.
 */
final class BearerToken extends CallCredentials {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final String token;
  private final boolean overPlaintext;

  BearerToken(String token, boolean overPlaintext) {
    this.token = token;
    this.overPlaintext = overPlaintext;
  }

  @Override
  public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
    boolean encrypted = info.getSecurityLevel() == SecurityLevel.PRIVACY_AND_INTEGRITY;
    if (!encrypted && !overPlaintext && !onThisMachine(info.getTransportAttrs().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR))) {
      applier.fail(Status.UNAUTHENTICATED.withDescription(
          "placecheck: the bearer token is not sent in plaintext to another machine; configure TLS "
              + "or allow it with bearerTokenOverPlaintext()"));
      return;
    }
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + token);
    applier.apply(headers);
  }

  /** A loopback address or a Unix socket (any address that is not an IP socket address). */
  static boolean onThisMachine(SocketAddress remote) {
    if (remote instanceof InetSocketAddress inet) {
      return inet.getAddress() != null && inet.getAddress().isLoopbackAddress();
    }
    return remote != null;
  }
}
