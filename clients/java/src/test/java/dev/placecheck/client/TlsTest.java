package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsServerCredentials;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.protobuf.services.HealthStatusManager;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The TLS options (root certificates, client certificate and key, bearer token) against an
 * in-process grpc-java server that requires a client certificate and records the token it
 * receives (SidecarSecurityTest has the sidecar's own TLS and tokens).
 */
class TlsTest {
  private static final String TOKEN = "java-client-test-token";

  private static TestCertificates certificates;
  private static Server server;
  private static String target;
  private static final List<String> authorizations = new CopyOnWriteArrayList<>();

  @BeforeAll
  static void start() throws Exception {
    assumeTrue(TestCertificates.opensslInstalled(), "openssl is not installed: no certificates to test with");
    certificates = TestCertificates.make();
    ServerInterceptor recordAuthorization = new ServerInterceptor() {
      @Override
      public <ReqT, RespT> ServerCall.Listener<ReqT> interceptCall(
          ServerCall<ReqT, RespT> call, Metadata headers, ServerCallHandler<ReqT, RespT> next) {
        authorizations.add(headers.get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)));
        return next.startCall(call, headers);
      }
    };
    TlsServerCredentials.Builder tls = TlsServerCredentials.newBuilder()
        .keyManager(certificates.serverCertificate.toFile(), certificates.serverKey.toFile())
        .trustManager(certificates.ca.toFile())
        .clientAuth(TlsServerCredentials.ClientAuth.REQUIRE);
    server = Grpc.newServerBuilderForPort(0, tls.build())
        .addService(ServerInterceptors.intercept(new HealthStatusManager().getHealthService(), recordAuthorization))
        .build()
        .start();
    target = "localhost:" + server.getPort();
  }

  @AfterAll
  static void stop() {
    if (server != null) {
      server.shutdownNow();
    }
    if (certificates != null) {
      certificates.delete();
    }
  }

  private static Status.Code healthCheck(ClientOptions options) {
    ManagedChannel channel = Channels.open(target, options);
    try {
      HealthGrpc.newBlockingStub(channel).withDeadlineAfter(5, TimeUnit.SECONDS)
          .check(HealthCheckRequest.getDefaultInstance());
      return Status.Code.OK;
    } catch (StatusRuntimeException error) {
      return error.getStatus().getCode();
    } finally {
      Channels.close(List.of(channel));
    }
  }

  @Test
  void mutualTlsCarriesTheBearerToken() throws Exception {
    authorizations.clear();
    Readiness.waitUntilServing(target, "", Duration.ofSeconds(10), certificates.mutualTls().bearerToken(TOKEN).build());
    assertEquals(List.of("Bearer " + TOKEN), authorizations);
  }

  @Test
  void anUntrustedServerIsRefused() {
    ClientOptions trustingAnotherRoot = ClientOptions.builder()
        .trustCertificates(certificates.clientCertificate)
        .clientCertificate(certificates.clientCertificate, certificates.clientKey)
        .retryPolicy(ClientOptions.RetryPolicy.NONE).build();
    assertEquals(Status.Code.UNAVAILABLE, healthCheck(trustingAnotherRoot));
  }

  @Test
  void withoutAClientCertificateTheServerRefuses() {
    ClientOptions serverOnly = ClientOptions.builder().trustCertificates(certificates.ca)
        .retryPolicy(ClientOptions.RetryPolicy.NONE).build();
    assertEquals(Status.Code.UNAVAILABLE, healthCheck(serverOnly));
    assertEquals(Status.Code.OK, healthCheck(certificates.mutualTls().build()));
  }
}
