package dev.placecheck.client;

import io.grpc.ClientInterceptor;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * How a client reaches the sidecar: channels, default deadline, retry policy, TLS and a bearer
 * token. Immutable; {@link #builder()} starts from the defaults.
 */
public final class ClientOptions {
  /** A deadline for calls that set none, above the sidecar's longest min_generation wait (2 s). */
  public static final Duration DEFAULT_DEADLINE = Duration.ofSeconds(5);

  final int channels;
  final Duration defaultDeadline;
  final RetryPolicy retryPolicy;
  final Path trustCertificates;
  final Path clientCertificate;
  final Path clientKey;
  final String authorityOverride;
  final String bearerToken;
  final boolean bearerTokenOverPlaintext;
  final List<ClientInterceptor> interceptors;

  private ClientOptions(Builder builder) {
    channels = builder.channels;
    defaultDeadline = builder.defaultDeadline;
    retryPolicy = builder.retryPolicy;
    trustCertificates = builder.trustCertificates;
    clientCertificate = builder.clientCertificate;
    clientKey = builder.clientKey;
    authorityOverride = builder.authorityOverride;
    bearerToken = builder.bearerToken;
    bearerTokenOverPlaintext = builder.bearerTokenOverPlaintext;
    interceptors = List.copyOf(builder.interceptors);
  }

  public static ClientOptions defaults() {
    return builder().build();
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Whether the channels use TLS: set by trust certificates or a client certificate. */
  public boolean tls() {
    return trustCertificates != null || clientCertificate != null;
  }

  /**
   * gRPC's own retry policy (service config), for UNAVAILABLE and RESOURCE_EXHAUSTED. A
   * google.rpc.RetryInfo in a refusal replaces the backoff with the delay the sidecar asks for.
   *
   * @param maxAttempts attempts in all, the first included (1: no retries)
   */
  public record RetryPolicy(int maxAttempts, Duration initialBackoff, Duration maxBackoff,
                            double backoffMultiplier) {
    public static final RetryPolicy DEFAULT =
        new RetryPolicy(5, Duration.ofMillis(100), Duration.ofSeconds(2), 2.0);
    public static final RetryPolicy NONE = new RetryPolicy(1, Duration.ofMillis(100), Duration.ofMillis(100), 1.0);

    public RetryPolicy {
      if (maxAttempts < 1) {
        throw new IllegalArgumentException("maxAttempts must be >= 1, got " + maxAttempts);
      }
      if (initialBackoff.isNegative() || initialBackoff.isZero() || maxBackoff.compareTo(initialBackoff) < 0) {
        throw new IllegalArgumentException("need 0 < initialBackoff <= maxBackoff");
      }
      if (backoffMultiplier <= 0) {
        throw new IllegalArgumentException("backoffMultiplier must be > 0");
      }
    }
  }

  public static final class Builder {
    private int channels = Math.max(2, Runtime.getRuntime().availableProcessors());
    private Duration defaultDeadline = DEFAULT_DEADLINE;
    private RetryPolicy retryPolicy = RetryPolicy.DEFAULT;
    private Path trustCertificates;
    private Path clientCertificate;
    private Path clientKey;
    private String authorityOverride;
    private String bearerToken;
    private boolean bearerTokenOverPlaintext;
    private final List<ClientInterceptor> interceptors = new ArrayList<>();

    private Builder() {}

    /**
     * Channels (each its own connection) a PlacementClient rotates calls over: at least the
     * sidecar's worker count, since SO_REUSEPORT spreads connections, not calls.
     */
    public Builder channels(int channels) {
      if (channels < 1) {
        throw new IllegalArgumentException("channels must be >= 1, got " + channels);
      }
      this.channels = channels;
      return this;
    }

    /** The deadline of a call that sets none (gRPC's service config {@code timeout}). */
    public Builder defaultDeadline(Duration deadline) {
      if (deadline.isNegative() || deadline.isZero()) {
        throw new IllegalArgumentException("defaultDeadline must be > 0");
      }
      this.defaultDeadline = deadline;
      return this;
    }

    public Builder retryPolicy(RetryPolicy policy) {
      this.retryPolicy = Objects.requireNonNull(policy);
      return this;
    }

    /** TLS, trusting these PEM root certificates (the sidecar's CA). */
    public Builder trustCertificates(Path pemFile) {
      this.trustCertificates = Objects.requireNonNull(pemFile);
      return this;
    }

    /** Mutual TLS: this PEM certificate chain and PKCS#8 PEM private key identify the client. */
    public Builder clientCertificate(Path certificateChain, Path privateKey) {
      this.clientCertificate = Objects.requireNonNull(certificateChain);
      this.clientKey = Objects.requireNonNull(privateKey);
      return this;
    }

    /** The name the server's certificate is checked against, when not the target's host. */
    public Builder authorityOverride(String authority) {
      this.authorityOverride = Objects.requireNonNull(authority);
      return this;
    }

    /**
     * Sends {@code authorization: Bearer <token>} with every call: over TLS, or in plaintext to
     * a sidecar on this machine (a loopback address or a Unix socket). A plaintext call to
     * another machine fails UNAUTHENTICATED rather than leak the token, unless
     * {@link #bearerTokenOverPlaintext()} allows it (e.g. behind a mesh proxy that adds TLS).
     */
    public Builder bearerToken(String token) {
      if (token.isBlank()) {
        throw new IllegalArgumentException("bearer token is blank");
      }
      this.bearerToken = token;
      return this;
    }

    public Builder bearerTokenOverPlaintext() {
      this.bearerTokenOverPlaintext = true;
      return this;
    }

    /** Interceptors added to every channel (metrics, tracing, request ids). */
    public Builder intercept(ClientInterceptor interceptor) {
      interceptors.add(Objects.requireNonNull(interceptor));
      return this;
    }

    public ClientOptions build() {
      return new ClientOptions(this);
    }
  }
}
