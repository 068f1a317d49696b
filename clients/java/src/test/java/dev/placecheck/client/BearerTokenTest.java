package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import io.grpc.Attributes;
import io.grpc.CallCredentials;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import org.junit.jupiter.api.Test;

/** When the bearer token is sent (no connection made: the peers are only addresses). */
class BearerTokenTest {
  // TEST-NET-1 (RFC 5737): an address of another machine, never connected to here.
  private static final SocketAddress ELSEWHERE = new InetSocketAddress("192.0.2.1", 50051);
  private static final SocketAddress LOOPBACK = new InetSocketAddress("127.0.0.1", 50051);
  private static final SocketAddress UNIX_SOCKET = new SocketAddress() {};

  /** The authorization header applied, or "refused: <status>". */
  private static String apply(BearerToken token, SecurityLevel level, SocketAddress remote) {
    String[] outcome = new String[1];
    CallCredentials.RequestInfo info = new CallCredentials.RequestInfo() {
      @Override
      public MethodDescriptor<?, ?> getMethodDescriptor() {
        return null;
      }

      @Override
      public SecurityLevel getSecurityLevel() {
        return level;
      }

      @Override
      public String getAuthority() {
        return "placecheck";
      }

      @Override
      public Attributes getTransportAttrs() {
        return Attributes.newBuilder().set(Grpc.TRANSPORT_ATTR_REMOTE_ADDR, remote).build();
      }
    };
    token.applyRequestMetadata(info, Runnable::run, new CallCredentials.MetadataApplier() {
      @Override
      public void apply(Metadata headers) {
        outcome[0] = headers.get(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER));
      }

      @Override
      public void fail(Status status) {
        outcome[0] = "refused: " + status.getCode();
      }
    });
    return outcome[0];
  }

  @Test
  void sentOverTlsAndInPlaintextOnThisMachineOnly() {
    BearerToken token = new BearerToken("t0ken", false);
    assertEquals("Bearer t0ken", apply(token, SecurityLevel.PRIVACY_AND_INTEGRITY, ELSEWHERE));
    assertEquals("Bearer t0ken", apply(token, SecurityLevel.NONE, LOOPBACK));
    assertEquals("Bearer t0ken", apply(token, SecurityLevel.NONE, UNIX_SOCKET));
    assertEquals("refused: UNAUTHENTICATED", apply(token, SecurityLevel.NONE, ELSEWHERE));
    assertEquals("refused: UNAUTHENTICATED", apply(token, SecurityLevel.INTEGRITY, ELSEWHERE));
  }

  @Test
  void plaintextElsewhereOnlyWhenAllowed() {
    assertEquals("Bearer t0ken", apply(new BearerToken("t0ken", true), SecurityLevel.NONE, ELSEWHERE));
  }

  @Test
  void noKnownPeerIsNotThisMachine() {
    assertEquals("refused: UNAUTHENTICATED", apply(new BearerToken("t0ken", false), SecurityLevel.NONE, null));
  }
}
