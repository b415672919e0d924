package dev.colod.agent.tls;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.Locale;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Bulk data sealed with AES-128-GCM in large chunks (issue 23: a record layer past JSSE's 16 KiB records; the
 * replication channels use it through {@link SealedSocket}, docs/PROTOCOL.md section 11). One direction of one
 * connection: {@link Keys} derives a key and a 4-byte nonce prefix per direction from a secret both ends share
 * (exchanged inside their mutual-TLS session); chunks are numbered from 0 by the sender and the receiver accepts only
 * the next number, so a replayed, reordered, altered or foreign chunk fails authentication, and an end without the
 * closing chunk is a truncation.
 * <p>
 * Wire, per chunk: be32 length of the sealed body (ciphertext + 16-byte tag), be8 flags (1: the last chunk), the
 * sealed body. Nonce: prefix (4) + be64 chunk number. AAD: be64 chunk number, be8 flags, be32 length.
 */
public final class SealedChunks
{
    public static final int TAG_BYTES = 16;
    /** The largest plaintext of one chunk a receiver accepts (a sender chooses up to this). */
    public static final int MAX_CHUNK = 1 << 20;
    static final int FLAG_LAST = 1;
    private static final int HEADER = 5;

    private static final Logger LOG = LoggerFactory.getLogger(SealedChunks.class);
    /** The size the warm-up seals: large calls take a path of the JDK's AES-GCM that small ones do not compile. */
    private static final int WARM_BYTES = 256 << 10;
    private static final AtomicBoolean WARMING = new AtomicBoolean();
    private static final CountDownLatch WARM = new CountDownLatch(1);

    private SealedChunks()
    {
    }

    /** Waits up to {@code ms} for the warm-up {@link #warmUp} started (benchmarks: so it does not share their CPU). */
    public static boolean awaitWarm(final long ms) throws InterruptedException
    {
        return WARM.await(ms, TimeUnit.MILLISECONDS);
    }

    /**
     * Starts, once per JVM, a background thread that seals and opens {@value #WARM_BYTES}-byte chunks under a
     * throwaway key until the JIT has compiled the JDK's AES-GCM for calls of that size (0.07 GB/s before, 2.5-5
     * GB/s after, measured on this machine kind; docs/BENCHMARKS.md "TLS"), at most 30 s. Left to itself the first
     * sessions' chunks would run interpreted for 2-3 s (and calls of 1 MiB, on their own, were not compiled within
     * 6 s); warming with TLS-record-sized calls does not help, the large calls take another branch.
     */
    public static void warmUp()
    {
        if (!WARMING.compareAndSet(false, true))
        {
            return;
        }
        final Thread t = new Thread(() ->
        {
            final long t0 = System.nanoTime();
            final byte[] secret = new byte[32];
            new SecureRandom().nextBytes(secret);
            final Keys keys = Keys.derive(secret, true);
            final ByteArrayOutputStream wire = new ByteArrayOutputStream(WARM_BYTES + 64);
            final byte[] data = new byte[WARM_BYTES];
            final byte[] back = new byte[WARM_BYTES];
            double gbs = 0;
            try
            {
                while (gbs < 1.0 && System.nanoTime() - t0 < 30_000_000_000L)
                {
                    final long w0 = System.nanoTime();
                    long bytes = 0;
                    while (System.nanoTime() - w0 < 100_000_000L)
                    {
                        wire.reset();
                        try (Output out = new Output(wire, keys, WARM_BYTES))
                        {
                            out.writeNow(data, 0, WARM_BYTES); // as a channel's writes go (SealedSocket)
                        }
                        try (Input in = new Input(new ByteArrayInputStream(wire.toByteArray()), keys))
                        {
                            in.readNBytes(back, 0, WARM_BYTES);
                        }
                        bytes += WARM_BYTES;
                    }
                    gbs = bytes / ((System.nanoTime() - w0) / 1e9) / 1e9;
                }
                LOG.info("AES-GCM for sealed chunks warmed up in {} ms ({} GB/s sealed and opened)",
                    (System.nanoTime() - t0) / 1_000_000, String.format(Locale.ROOT, "%.2f", gbs));
            }
            catch (final IOException ex)
            {
                LOG.warn("AES-GCM warm-up failed: {}", ex.toString());
            }
            finally
            {
                WARM.countDown();
            }
        }, "colod-aes-gcm-warm-up");
        t.setDaemon(true);
        t.setPriority(Thread.MIN_PRIORITY);
        t.start();
    }

    /** One direction's key and nonce prefix. */
    public record Keys(byte[] key, byte[] noncePrefix)
    {
        /**
         * HKDF-SHA256 (RFC 5869) of {@code secret}: the direction from the side that opened the connection
         * ({@code fromOpener}) and the other get different keys and prefixes.
         */
        public static Keys derive(final byte[] secret, final boolean fromOpener)
        {
            try
            {
                final Mac extract = Mac.getInstance("HmacSHA256");
                extract.init(new SecretKeySpec("colod sealed chunks v1".getBytes(StandardCharsets.US_ASCII), "HmacSHA256"));
                final byte[] prk = extract.doFinal(secret);
                final String dir = fromOpener ? "opener to listener" : "listener to opener";
                return new Keys(expand(prk, dir + " key", 16), expand(prk, dir + " nonce", 4));
            }
            catch (final GeneralSecurityException ex)
            {
                throw new IllegalStateException("HmacSHA256 is part of every JDK", ex);
            }
        }

        private static byte[] expand(final byte[] prk, final String info, final int length)
            throws GeneralSecurityException
        {
            final Mac m = Mac.getInstance("HmacSHA256");
            m.init(new SecretKeySpec(prk, "HmacSHA256"));
            m.update(info.getBytes(StandardCharsets.US_ASCII));
            m.update((byte)1); // one block of output is enough for up to 32 bytes
            return Arrays.copyOf(m.doFinal(), length);
        }
    }

    /** Seals what is written into chunks of up to {@code chunkBytes}; {@link #close} sends the closing chunk. */
    public static final class Output extends OutputStream
    {
        private final OutputStream raw;
        private final Cipher cipher;
        private final SecretKeySpec key;
        private final byte[] prefix;
        private final int chunkBytes;
        /** Grown up to {@code chunkBytes} as writes need it: a channel of small messages keeps small buffers. */
        private byte[] plain;
        private byte[] sealed;
        private int filled;
        private long number;
        private boolean closed;

        public Output(final OutputStream raw, final Keys keys, final int chunkBytes)
        {
            if (chunkBytes < 1 || chunkBytes > MAX_CHUNK)
            {
                throw new IllegalArgumentException("chunk size must be 1.." + MAX_CHUNK + ", was " + chunkBytes);
            }
            this.raw = raw;
            this.cipher = aesGcm();
            this.key = new SecretKeySpec(keys.key(), "AES");
            this.prefix = keys.noncePrefix().clone();
            this.chunkBytes = chunkBytes;
            this.plain = new byte[Math.min(chunkBytes, 4096)];
            this.sealed = new byte[0]; // grown by seal() to the largest chunk sealed
        }

        @Override
        public void write(final int b) throws IOException
        {
            write(new byte[]{(byte)b}, 0, 1);
        }

        @Override
        public void write(final byte[] b, final int off, final int len) throws IOException
        {
            if (closed)
            {
                throw new IOException("sealed stream closed");
            }
            int at = off;
            final int end = off + len;
            while (at < end)
            {
                if (filled == plain.length && plain.length < chunkBytes)
                {
                    plain = Arrays.copyOf(plain, Math.min(chunkBytes, Math.max(2 * plain.length, end - at + filled)));
                }
                final int n = Math.min(end - at, plain.length - filled);
                System.arraycopy(b, at, plain, filled, n);
                filled += n;
                at += n;
                if (filled == chunkBytes)
                {
                    seal(0);
                }
            }
        }

        /** What is buffered leaves as a chunk of its own. */
        @Override
        public void flush() throws IOException
        {
            if (filled > 0)
            {
                seal(0);
            }
            raw.flush();
        }

        /** The rest, then the closing chunk (empty, flagged last); the raw stream stays open. Once only. */
        public void finish() throws IOException
        {
            if (closed)
            {
                return;
            }
            if (filled > 0)
            {
                seal(0);
            }
            seal(FLAG_LAST);
            closed = true;
            raw.flush();
        }

        /** {@link #finish}, then the raw stream is closed. */
        @Override
        public void close() throws IOException
        {
            finish();
            raw.close();
        }

        /**
         * Seals {@code b[off, off+len)} at once, as chunks of up to the chunk size, after what is buffered: no copy
         * into the buffer (what a socket's writes do, {@link SealedSocket}).
         */
        public void writeNow(final byte[] b, final int off, final int len) throws IOException
        {
            if (closed)
            {
                throw new IOException("sealed stream closed");
            }
            if (filled > 0)
            {
                seal(0);
            }
            for (int at = off, end = off + len; at < end; )
            {
                final int n = Math.min(end - at, chunkBytes);
                seal(b, at, n, 0);
                at += n;
            }
        }

        private void seal(final int flags) throws IOException
        {
            seal(plain, 0, filled, flags);
            filled = 0;
        }

        private void seal(final byte[] from, final int off, final int len, final int flags) throws IOException
        {
            if (sealed.length < HEADER + len + TAG_BYTES)
            {
                sealed = new byte[HEADER + len + TAG_BYTES];
            }
            final int length = len + TAG_BYTES;
            sealed[0] = (byte)(length >>> 24);
            sealed[1] = (byte)(length >>> 16);
            sealed[2] = (byte)(length >>> 8);
            sealed[3] = (byte)length;
            sealed[4] = (byte)flags;
            try
            {
                cipher.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_BYTES * 8, nonce(prefix, number)));
                cipher.updateAAD(aad(number, flags, length));
                final int n = cipher.doFinal(from, off, len, sealed, HEADER);
                raw.write(sealed, 0, HEADER + n);
            }
            catch (final GeneralSecurityException ex)
            {
                throw new IOException("sealing chunk " + number + " failed: " + ex, ex);
            }
            number++;
        }
    }

    /** Opens chunks in order; refuses anything else with an IOException that names the chunk. */
    public static final class Input extends InputStream
    {
        private final DataInputStream raw;
        private final Cipher cipher;
        private final SecretKeySpec key;
        private final byte[] prefix;
        /** Grown to the largest chunk seen (at most {@link #MAX_CHUNK} plus the tag): small channels stay small. */
        private byte[] sealed = new byte[0];
        private byte[] plain = new byte[0];
        private int at;
        private int available;
        private long number;
        private boolean last;

        public Input(final InputStream raw, final Keys keys)
        {
            this.raw = new DataInputStream(raw);
            this.cipher = aesGcm();
            this.key = new SecretKeySpec(keys.key(), "AES");
            this.prefix = keys.noncePrefix().clone();
        }

        @Override
        public int read() throws IOException
        {
            final byte[] one = new byte[1];
            return read(one, 0, 1) < 0 ? -1 : one[0] & 0xFF;
        }

        @Override
        public int read(final byte[] b, final int off, final int len) throws IOException
        {
            if (len == 0)
            {
                return 0;
            }
            while (at == available)
            {
                if (last)
                {
                    return -1;
                }
                final int direct = open(b, off, len);
                if (direct > 0)
                {
                    return direct;
                }
            }
            final int n = Math.min(len, available - at);
            System.arraycopy(plain, at, b, off, n);
            at += n;
            return n;
        }

        /**
         * Reads and opens the next chunk: into {@code b} when its plaintext fits in {@code len} (returns its length,
         * possibly 0), else into the buffer (returns -1).
         */
        private int open(final byte[] b, final int off, final int len) throws IOException
        {
            final int length;
            final int flags;
            try
            {
                length = raw.readInt();
                flags = raw.readUnsignedByte();
            }
            catch (final EOFException ex)
            {
                throw new EOFException("sealed stream ended before chunk " + number + " without its closing chunk " +
                    "(the connection was closed or cut)");
            }
            if (length < TAG_BYTES || length > MAX_CHUNK + TAG_BYTES || (flags & ~FLAG_LAST) != 0)
            {
                throw new IOException("sealed chunk " + number + ": malformed header (length " + length + ", flags " +
                    flags + ")");
            }
            if (sealed.length < length)
            {
                sealed = new byte[length];
            }
            try
            {
                raw.readFully(sealed, 0, length);
            }
            catch (final EOFException ex)
            {
                throw new EOFException("sealed stream truncated in chunk " + number + " (" + length + " bytes announced)");
            }
            final boolean direct = length - TAG_BYTES <= len;
            if (!direct && plain.length < length - TAG_BYTES)
            {
                plain = new byte[length - TAG_BYTES];
            }
            final int opened;
            try
            {
                cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BYTES * 8, nonce(prefix, number)));
                cipher.updateAAD(aad(number, flags, length));
                // on a failed tag nothing is returned: the caller gets the exception, not what b holds
                opened = direct ? cipher.doFinal(sealed, 0, length, b, off) : cipher.doFinal(sealed, 0, length, plain, 0);
            }
            catch (final AEADBadTagException ex)
            {
                throw new IOException("sealed chunk " + number + " failed authentication: altered, replayed, out of " +
                    "order or sealed under another key");
            }
            catch (final GeneralSecurityException ex)
            {
                throw new IOException("opening sealed chunk " + number + " failed: " + ex, ex);
            }
            number++;
            last = (flags & FLAG_LAST) != 0;
            at = 0;
            available = direct ? 0 : opened;
            return direct ? opened : -1;
        }

        /** Opened bytes not yet read. */
        @Override
        public int available()
        {
            return available - at;
        }

        @Override
        public void close() throws IOException
        {
            raw.close();
        }
    }

    private static Cipher aesGcm()
    {
        try
        {
            return Cipher.getInstance("AES/GCM/NoPadding");
        }
        catch (final GeneralSecurityException ex)
        {
            throw new IllegalStateException("AES/GCM is part of every JDK", ex);
        }
    }

    private static byte[] nonce(final byte[] prefix, final long number)
    {
        final byte[] n = new byte[12];
        System.arraycopy(prefix, 0, n, 0, 4);
        for (int i = 0; i < 8; i++)
        {
            n[4 + i] = (byte)(number >>> (56 - 8 * i));
        }
        return n;
    }

    private static byte[] aad(final long number, final int flags, final int length)
    {
        final byte[] a = new byte[13];
        for (int i = 0; i < 8; i++)
        {
            a[i] = (byte)(number >>> (56 - 8 * i));
        }
        a[8] = (byte)flags;
        a[9] = (byte)(length >>> 24);
        a[10] = (byte)(length >>> 16);
        a[11] = (byte)(length >>> 8);
        a[12] = (byte)length;
        return a;
    }
}
