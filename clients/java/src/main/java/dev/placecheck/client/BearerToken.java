package dev.placecheck.client;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.util.concurrent.Executor;

/** {@code authorization: Bearer <token>} on every call; over TLS only unless allowed otherwise. */
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
    if (info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY && !overPlaintext) {
      applier.fail(Status.UNAUTHENTICATED.withDescription(
          "placecheck: the bearer token is not sent over a plaintext channel; configure TLS "
              + "or allow it with bearerTokenOverPlaintext()"));
      return;
    }
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + token);
    applier.apply(headers);
  }
}
