package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
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
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The TLS options (root certificates, client certificate and key, bearer token) against an
 * in-process grpc-java server that requires a client certificate and records the token: the
 * sidecar serves plaintext only so far. Certificates are made with openssl for each run.
 */
class TlsTest {
  private static final String TOKEN = "java-client-test-token";

  private static Path directory;
  private static Server server;
  private static String target;
  private static final List<String> authorizations = new CopyOnWriteArrayList<>();

  @BeforeAll
  static void start() throws Exception {
    assumeTrue(Files.isExecutable(Path.of("/usr/bin/openssl")), "openssl is not installed: no certificates to test with");
    directory = Files.createTempDirectory("placecheck-java-tls-");
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=placecheck test CA",
        "-keyout", "ca.key", "-out", "ca.pem");
    Files.writeString(directory.resolve("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    Files.writeString(directory.resolve("client.ext"), "extendedKeyUsage=clientAuth\n");
    for (String name : List.of("server", "client")) {
      openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout", name + ".key",
          "-out", name + ".csr");
      openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
          "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem");
    }
    ServerInterceptor recordAuthorization = new ServerInterceptor() {
      @Override
      public <ReqT, RespT> ServerCall.Listener<ReqT> interceptCall(
          ServerCall<ReqT, RespT> call, Metadata headers, ServerCallHandler<ReqT, RespT> next) {
        authorizations.add(headers.get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER)));
        return next.startCall(call, headers);
      }
    };
    TlsServerCredentials.Builder tls = TlsServerCredentials.newBuilder()
        .keyManager(file("server.pem"), file("server.key"))
        .trustManager(file("ca.pem"))
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
    if (directory != null) {
      Sidecar.deleteRecursively(directory);
    }
  }

  private static File file(String name) {
    return directory.resolve(name).toFile();
  }

  private static void openssl(String... arguments) throws IOException, InterruptedException {
    List<String> command = new ArrayList<>(List.of("openssl"));
    command.addAll(List.of(arguments));
    Process process = new ProcessBuilder(command).directory(directory.toFile()).redirectErrorStream(true).start();
    String output = new String(process.getInputStream().readAllBytes());
    if (process.waitFor() != 0) {
      throw new IOException("openssl " + String.join(" ", arguments) + ":\n" + output);
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

  private static ClientOptions.Builder mutualTls() {
    return ClientOptions.builder()
        .trustCertificates(directory.resolve("ca.pem"))
        .clientCertificate(directory.resolve("client.pem"), directory.resolve("client.key"));
  }

  @Test
  void mutualTlsCarriesTheBearerToken() throws Exception {
    authorizations.clear();
    Readiness.waitUntilServing(target, "", Duration.ofSeconds(10), mutualTls().bearerToken(TOKEN).build());
    assertEquals(List.of("Bearer " + TOKEN), authorizations);
  }

  @Test
  void anUntrustedServerIsRefused() {
    ClientOptions trustingAnotherRoot = ClientOptions.builder()
        .trustCertificates(directory.resolve("client.pem"))
        .clientCertificate(directory.resolve("client.pem"), directory.resolve("client.key"))
        .retryPolicy(ClientOptions.RetryPolicy.NONE).build();
    assertEquals(Status.Code.UNAVAILABLE, healthCheck(trustingAnotherRoot));
  }

  @Test
  void withoutAClientCertificateTheServerRefuses() {
    ClientOptions serverOnly = ClientOptions.builder().trustCertificates(directory.resolve("ca.pem"))
        .retryPolicy(ClientOptions.RetryPolicy.NONE).build();
    assertEquals(Status.Code.UNAVAILABLE, healthCheck(serverOnly));
    assertEquals(Status.Code.OK, healthCheck(mutualTls().build()));
  }
}
