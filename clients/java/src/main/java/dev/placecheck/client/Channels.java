package dev.placecheck.client;

import dev.placecheck.v1.FleetStateGrpc;
import dev.placecheck.v1.PlacementCheckGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/** Opens a channel as the options say: credentials, default deadline and retry policy. */
final class Channels {
  /** What gRPC's retry policy retries; other codes are answers, not transient failures. */
  static final List<Status.Code> RETRYABLE_CODES = List.of(Status.Code.UNAVAILABLE, Status.Code.RESOURCE_EXHAUSTED);

  private static final long CLOSE_WAIT_S = 5;

  private Channels() {}

  static ManagedChannel open(String target, ClientOptions options) {
    ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(target, credentials(options))
        .defaultServiceConfig(serviceConfig(options))
        .enableRetry()
        // gRPC caps a service config's maxAttempts at this (5 by default).
        .maxRetryAttempts(options.retryPolicy.maxAttempts())
        .intercept(options.interceptors)
        .intercept(new RetryInfoPushback());
    if (options.authorityOverride != null) {
      builder.overrideAuthority(options.authorityOverride);
    }
    return builder.build();
  }

  /** Shuts the channels down, giving calls in flight a moment to finish. */
  static void close(List<ManagedChannel> channels) {
    channels.forEach(ManagedChannel::shutdown);
    try {
      for (ManagedChannel channel : channels) {
        if (!channel.awaitTermination(CLOSE_WAIT_S, TimeUnit.SECONDS)) {
          channel.shutdownNow();
        }
      }
    } catch (InterruptedException interrupted) {
      channels.forEach(ManagedChannel::shutdownNow);
      Thread.currentThread().interrupt();
    }
  }

  private static ChannelCredentials credentials(ClientOptions options) {
    ChannelCredentials channel = options.tls() ? tls(options) : InsecureChannelCredentials.create();
    if (options.bearerToken == null) {
      return channel;
    }
    return CompositeChannelCredentials.create(
        channel, new BearerToken(options.bearerToken, options.bearerTokenOverPlaintext));
  }

  private static ChannelCredentials tls(ClientOptions options) {
    TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder();
    try {
      if (options.trustCertificates != null) {
        tls.trustManager(options.trustCertificates.toFile());
      }
      if (options.clientCertificate != null) {
        tls.keyManager(options.clientCertificate.toFile(), options.clientKey.toFile());
      }
    } catch (IOException error) {
      throw new UncheckedIOException("placecheck: reading TLS certificates", error);
    }
    return tls.build();
  }

  /**
   * gRPC's service config: for both placecheck services, the default deadline ({@code timeout})
   * and the retry policy for UNAVAILABLE and RESOURCE_EXHAUSTED. Writes are retried too: every
   * FleetState write replaces or removes by name, so sending it again changes nothing more.
   */
  static Map<String, ?> serviceConfig(ClientOptions options) {
    Map<String, Object> methodConfig = new HashMap<>();
    methodConfig.put("name", List.of(
        Map.of("service", PlacementCheckGrpc.SERVICE_NAME), Map.of("service", FleetStateGrpc.SERVICE_NAME)));
    methodConfig.put("timeout", seconds(options.defaultDeadline));
    ClientOptions.RetryPolicy retry = options.retryPolicy;
    if (retry.maxAttempts() > 1) {  // gRPC rejects a retry policy of fewer than 2 attempts
      methodConfig.put("retryPolicy", Map.of(
          "maxAttempts", (double) retry.maxAttempts(),
          "initialBackoff", seconds(retry.initialBackoff()),
          "maxBackoff", seconds(retry.maxBackoff()),
          "backoffMultiplier", retry.backoffMultiplier(),
          "retryableStatusCodes", RETRYABLE_CODES.stream().map(Status.Code::name).toList()));
    }
    return Map.of("methodConfig", List.of(methodConfig));
  }

  private static String seconds(Duration duration) {
    return String.format(Locale.ROOT, "%d.%09ds", duration.getSeconds(), duration.getNano());
  }
}
