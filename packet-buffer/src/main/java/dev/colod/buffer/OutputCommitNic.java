package dev.colod.buffer;

/**
 * One NIC's output-commit backend, as the VM-level {@link NicOutputCommit} drives it: the TAP backend
 * ({@link TapNic}, frames held in this process) or the NFQUEUE backend (frames held in the kernel).
 */
public interface OutputCommitNic extends AutoCloseable
{
    String name();

    /** Hold from now on (protection started). Synchronous. */
    void hold();

    /** Close epoch {@code epoch}: what was sent so far belongs to it. Synchronous. */
    void seal(long epoch);

    /** Let epoch {@code epoch} (and older ones) out, in order. */
    void release(long epoch);

    /** Protection lost: let everything out and pass frames straight through from now on. Synchronous. */
    void releaseAllAndPass();

    /** The secondary took over: drop what is held and everything after. Synchronous. */
    void fence();

    NicStats stats();

    @Override
    void close();
}
