package dev.colod.core.spi;

import java.io.IOException;
import java.io.OutputStream;

/** The captured state of one checkpoint: its exact size, then exactly that many bytes. */
public interface StateCapture extends AutoCloseable
{
    long sizeBytes();

    /** Write exactly {@link #sizeBytes()} bytes to {@code out}; {@code progress} is told as bytes go out. */
    void writeTo(OutputStream out, Progress progress) throws IOException;

    @Override
    void close();

    /** How much of the state has been written, for tracing and fault injection. */
    interface Progress
    {
        void written(long doneBytes) throws IOException;
    }
}
