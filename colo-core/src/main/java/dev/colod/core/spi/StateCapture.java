package dev.colod.core.spi;

import java.io.IOException;
import java.io.OutputStream;

/** The captured state of one checkpoint: its exact size, then exactly that many bytes. */
public interface StateCapture extends AutoCloseable
{
    long sizeBytes();

    /** Write exactly {@link #sizeBytes()} bytes to {@code out}; {@code progress} is told as bytes go out. */
    void writeTo(OutputStream out, Progress progress) throws IOException;

    /**
     * True when the bytes are read from the live VM as they are written (e.g. a first, full checkpoint streamed
     * straight from guest RAM instead of copied): then the VM must stay paused until {@link #writeTo} is done,
     * even in speculative mode.
     */
    default boolean needsPausedVm()
    {
        return false;
    }

    @Override
    void close();

    /** How much of the state has been written, for tracing and fault injection. */
    interface Progress
    {
        void written(long doneBytes) throws IOException;
    }
}
