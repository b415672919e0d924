package dev.colod.agent.tls;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.Arrays;
import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * Bulk data sealed with AES-128-GCM in large chunks (issue 23: the record layer past JSSE's 16 KiB records; not yet
 * wired into the replication channels, see docs/PROTOCOL.md "Sealed chunks"). One direction of one connection:
 * {@link Keys} derives a key and a 4-byte nonce prefix per direction from a secret both ends share (to be exchanged
 * inside their mutual-TLS session); chunks are numbered from 0 by the sender and the receiver accepts only the next
 * number, so a replayed, reordered, altered or foreign chunk fails authentication, and an end without the closing
 * chunk is a truncation.
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

    private SealedChunks()
    {
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
        private final byte[] plain;
        private final byte[] sealed;
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
            this.plain = new byte[chunkBytes];
            this.sealed = new byte[HEADER + chunkBytes + TAG_BYTES];
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
                final int n = Math.min(end - at, plain.length - filled);
                System.arraycopy(b, at, plain, filled, n);
                filled += n;
                at += n;
                if (filled == plain.length)
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

        /** The rest, then the closing chunk (empty, flagged last), then the raw stream is closed. */
        @Override
        public void close() throws IOException
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
            raw.close();
        }

        private void seal(final int flags) throws IOException
        {
            final int length = filled + TAG_BYTES;
            sealed[0] = (byte)(length >>> 24);
            sealed[1] = (byte)(length >>> 16);
            sealed[2] = (byte)(length >>> 8);
            sealed[3] = (byte)length;
            sealed[4] = (byte)flags;
            try
            {
                cipher.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(TAG_BYTES * 8, nonce(prefix, number)));
                cipher.updateAAD(aad(number, flags, length));
                final int n = cipher.doFinal(plain, 0, filled, sealed, HEADER);
                raw.write(sealed, 0, HEADER + n);
            }
            catch (final GeneralSecurityException ex)
            {
                throw new IOException("sealing chunk " + number + " failed: " + ex, ex);
            }
            number++;
            filled = 0;
        }
    }

    /** Opens chunks in order; refuses anything else with an IOException that names the chunk. */
    public static final class Input extends InputStream
    {
        private final DataInputStream raw;
        private final Cipher cipher;
        private final SecretKeySpec key;
        private final byte[] prefix;
        private final byte[] sealed = new byte[MAX_CHUNK + TAG_BYTES];
        private final byte[] plain = new byte[MAX_CHUNK];
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
                open();
            }
            final int n = Math.min(len, available - at);
            System.arraycopy(plain, at, b, off, n);
            at += n;
            return n;
        }

        private void open() throws IOException
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
                throw new EOFException("sealed stream truncated: it ended before chunk " + number + " without the " +
                    "closing chunk");
            }
            if (length < TAG_BYTES || length > MAX_CHUNK + TAG_BYTES || (flags & ~FLAG_LAST) != 0)
            {
                throw new IOException("sealed chunk " + number + ": malformed header (length " + length + ", flags " +
                    flags + ")");
            }
            try
            {
                raw.readFully(sealed, 0, length);
            }
            catch (final EOFException ex)
            {
                throw new EOFException("sealed stream truncated in chunk " + number + " (" + length + " bytes announced)");
            }
            try
            {
                cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BYTES * 8, nonce(prefix, number)));
                cipher.updateAAD(aad(number, flags, length));
                available = cipher.doFinal(sealed, 0, length, plain, 0);
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
            at = 0;
            number++;
            last = (flags & FLAG_LAST) != 0;
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
