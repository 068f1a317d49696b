package dev.placecheck.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.PreconditionFailure;
import com.google.rpc.ResourceInfo;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

/**
 * A failed call's status with the google.rpc details the sidecar attaches (its
 * grpc-status-details-bin trailer), decoded: BadRequest on INVALID_ARGUMENT (which field),
 * ResourceInfo on NOT_FOUND (which host or aggregate), PreconditionFailure on FAILED_PRECONDITION
 * (SNAPSHOT_STALE, EPOCH_MISMATCH), RetryInfo on UNAVAILABLE and RESOURCE_EXHAUSTED (how long to
 * wait), and ErrorInfo's machine-readable reason on most.
 *
 * @param code the gRPC status code
 * @param message the status message
 * @param fieldViolations BadRequest's field violations; empty when none
 * @param resourceInfo what was not found
 * @param preconditionViolations PreconditionFailure's violations; empty when none
 * @param retryDelay how long the sidecar asks the caller to wait before trying again
 * @param errorInfo the reason (e.g. HOST_NOT_FOUND), domain and metadata
 */
public record RichError(Status.Code code, String message, List<BadRequest.FieldViolation> fieldViolations,
                        Optional<ResourceInfo> resourceInfo,
                        List<PreconditionFailure.Violation> preconditionViolations,
                        Optional<Duration> retryDelay, Optional<ErrorInfo> errorInfo) {

  /** Decodes a failed call's exception (a StatusRuntimeException or StatusException). */
  public static RichError of(Throwable error) {
    Status status = Status.fromThrowable(error);
    com.google.rpc.Status rich = StatusProto.fromThrowable(error);
    List<Any> details = rich == null ? List.of() : rich.getDetailsList();
    return new RichError(
        status.getCode(),
        status.getDescription() == null ? "" : status.getDescription(),
        detail(details, BadRequest.class).map(BadRequest::getFieldViolationsList).orElse(List.of()),
        detail(details, ResourceInfo.class),
        detail(details, PreconditionFailure.class).map(PreconditionFailure::getViolationsList).orElse(List.of()),
        detail(details, RetryInfo.class).map(info -> Duration.ofSeconds(
            info.getRetryDelay().getSeconds(), info.getRetryDelay().getNanos())),
        detail(details, ErrorInfo.class));
  }

  /** The fields named by BadRequest's violations, in order. */
  public List<String> fields() {
    return fieldViolations.stream().map(BadRequest.FieldViolation::getField).toList();
  }

  /** ErrorInfo's reason, or "" without one. */
  public String reason() {
    return errorInfo.map(ErrorInfo::getReason).orElse("");
  }

  private static <T extends Message> Optional<T> detail(List<Any> details, Class<T> type) {
    for (Any detail : details) {
      if (detail.is(type)) {
        try {
          return Optional.of(detail.unpack(type));
        } catch (InvalidProtocolBufferException malformed) {
          return Optional.empty();
        }
      }
    }
    return Optional.empty();
  }
}
