package dev.placecheck.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import com.google.protobuf.Any;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Metadata;
import io.grpc.Status;
import org.junit.jupiter.api.Test;

/** The RetryInfo to gRPC pushback translation on its own (no sidecar): which trailers get one. */
class RetryInfoPushbackTest {
  private static Metadata trailers(Status.Code code, long retryDelayMillis) {
    com.google.protobuf.Duration delay = com.google.protobuf.Duration.newBuilder()
        .setSeconds(retryDelayMillis / 1000).setNanos((int) (retryDelayMillis % 1000) * 1_000_000).build();
    Metadata trailers = new Metadata();
    trailers.put(RetryInfoPushback.STATUS_DETAILS, com.google.rpc.Status.newBuilder()
        .setCode(code.value())
        .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("STORE_FULL").build()))
        .addDetails(Any.pack(RetryInfo.newBuilder().setRetryDelay(delay).build()))
        .build());
    return trailers;
  }

  @Test
  void retryableRefusalsGetTheirRetryDelayAsPushback() {
    Metadata exhausted = trailers(Status.Code.RESOURCE_EXHAUSTED, 1_250);
    RetryInfoPushback.addPushback(exhausted);
    assertEquals("1250", exhausted.get(RetryInfoPushback.PUSHBACK_MS));
    Metadata unavailable = trailers(Status.Code.UNAVAILABLE, 100);
    RetryInfoPushback.addPushback(unavailable);
    assertEquals("100", unavailable.get(RetryInfoPushback.PUSHBACK_MS));
  }

  @Test
  void otherCodesGetNoneSinceAPushbackWouldRetryThem() {
    Metadata invalid = trailers(Status.Code.INVALID_ARGUMENT, 100);
    RetryInfoPushback.addPushback(invalid);
    assertNull(invalid.get(RetryInfoPushback.PUSHBACK_MS));
  }

  @Test
  void aServersOwnPushbackWins() {
    Metadata trailers = trailers(Status.Code.UNAVAILABLE, 100);
    trailers.put(RetryInfoPushback.PUSHBACK_MS, "-1");
    RetryInfoPushback.addPushback(trailers);
    assertEquals("-1", trailers.get(RetryInfoPushback.PUSHBACK_MS));
  }

  @Test
  void noDetailsNoPushback() {
    Metadata trailers = new Metadata();
    RetryInfoPushback.addPushback(trailers);
    assertNull(trailers.get(RetryInfoPushback.PUSHBACK_MS));
  }
}
