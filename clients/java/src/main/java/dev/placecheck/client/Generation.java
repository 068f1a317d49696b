package dev.placecheck.client;

import java.util.Objects;

/**
 * A snapshot generation with the fleet history (epoch) it belongs to, as every FleetState write
 * returns it. Passed as a decision's {@code minGeneration}, it makes the sidecar wait for that
 * generation and also expect that epoch, so another history's generation never satisfies it
 * (FAILED_PRECONDITION, EPOCH_MISMATCH).
 *
 * @param number the generation; 0 asks for no particular one
 * @param epoch the fleet history; empty expects none
 */
public record Generation(long number, String epoch) {
  /** No read-your-writes: any snapshot will do. */
  public static final Generation ANY = new Generation(0, "");

  public Generation {
    Objects.requireNonNull(epoch, "epoch");
    if (number < 0) {
      throw new IllegalArgumentException("generation must be >= 0, got " + number);
    }
  }
}
