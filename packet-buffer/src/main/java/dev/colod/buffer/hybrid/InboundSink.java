package dev.colod.buffer.hybrid;

import java.nio.ByteBuffer;

/** Where a primary NIC's ledger hands what hybrid mode copies to the secondary; called on the NIC's loop, never blocks. */
public interface InboundSink
{
    /** A frame ({@code len} bytes at {@code off} of {@code buf}) goes to the primary's guest on NIC {@code nic}. */
    void inbound(int nic, ByteBuffer buf, int off, int len);

    /** The VM paused for checkpoint {@code epoch}: the frames of {@code nic} after this arrive after it. */
    void era(int nic, long epoch);
}
