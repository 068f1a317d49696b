package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.placecheck.v1.PlacementRequest;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The TLS options against the sidecar's own security: mutual TLS on the decision port
 * (--tls-cert/--tls-key/--tls-client-ca), bearer tokens (--tokens-file) and the callers it
 * admits (--decision-callers). Health needs no identity, so readiness works before any.
 */
class SidecarSecurityTest {
  private static final String CONDUCTOR_TOKEN = "java-conductor-token-3f9a1c7e";
  private static final String READER_TOKEN = "java-reader-token-8b2d6e0a41";  // known, not admitted
  private static final PlacementRequest SMALL = PlacementRequest.newBuilder().putResources("VCPU", 1).build();

  private static TestCertificates certificates;
  private static Sidecar sidecar;

  @BeforeAll
  static void start() throws Exception {
    assumeTrue(TestCertificates.opensslInstalled(), "openssl is not installed: no certificates to test with");
    certificates = TestCertificates.make();
    Path tokens = certificates.directory.resolve("tokens");
    Files.writeString(tokens, CONDUCTOR_TOKEN + " conductor\n" + READER_TOKEN + " reader\n");
    sidecar = Sidecar.withDemoFleet(50, List.of(
        "--tls-cert", certificates.serverCertificate.toString(), "--tls-key", certificates.serverKey.toString(),
        "--tls-client-ca", certificates.ca.toString(), "--tokens-file", tokens.toString(),
        "--decision-callers", "conductor," + TestCertificates.CLIENT_IDENTITY),
        certificates.mutualTls().build());
  }

  @AfterAll
  static void stop() {
    if (sidecar != null) {
      sidecar.close();
    }
    if (certificates != null) {
      certificates.delete();
    }
  }

  private static Status.Code check(ClientOptions.Builder options) {
    try (PlacementClient client = new PlacementClient(sidecar.decisionTarget,
        options.channels(1).retryPolicy(ClientOptions.RetryPolicy.NONE).build())) {
      assertTrue(client.selectDestinations(SMALL).getPlacementsCount() > 0);
      return Status.Code.OK;
    } catch (StatusRuntimeException refused) {
      return refused.getStatus().getCode();
    }
  }

  @Test
  void theClientCertificateIdentifiesAnAdmittedCaller() {
    assertEquals(Status.Code.OK, check(certificates.mutualTls()));
  }

  @Test
  void aTokenOfAnAdmittedIdentityIsAccepted() {
    assertEquals(Status.Code.OK, check(certificates.mutualTls().bearerToken(CONDUCTOR_TOKEN)));
  }

  @Test
  void aTokenOfAnotherIdentityOrNoneKnownIsPermissionDenied() {
    assertEquals(Status.Code.PERMISSION_DENIED, check(certificates.mutualTls().bearerToken(READER_TOKEN)));
    assertEquals(Status.Code.PERMISSION_DENIED,
        check(certificates.mutualTls().bearerToken("not-a-token-of-the-file")));
  }

  @Test
  void withoutAClientCertificateOrOverPlaintextNothingGetsThrough() {
    assertEquals(Status.Code.UNAVAILABLE,
        check(ClientOptions.builder().trustCertificates(certificates.ca).bearerToken(CONDUCTOR_TOKEN)));
    assertEquals(Status.Code.UNAVAILABLE, check(ClientOptions.builder()));
  }
}
