package dev.colod.agent.tls;

import dev.colod.core.Transport;
import dev.colod.core.protocol.AuthenticationException;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;

import java.io.ByteArrayInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.InvalidKeyException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.security.cert.CertificateParsingException;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManagerFactory;

/**
 * Mutual TLS 1.3 on the replication channels: a {@link Transport} around another one (which still makes the plain
 * sockets, e.g. in a namespace). Both sides present a certificate from the configured CA; each checks that the
 * other's names (DNS and IP subject alternative names; the CN only without them, RFC 6125) include the configured
 * peer's. Everything is refused before a byte of the colod protocol is read: no certificate, another CA, expired,
 * the wrong name, plaintext. After the handshake a channel's data goes in {@link SealedSocket sealed chunks} when both
 * ends offered them (ALPN {@code colod-sealed-1}), else in TLS records.
 */
public final class PeerTls implements Transport
{
    private static final String[] PROTOCOLS = {"TLSv1.3"};
    /** AES-128-GCM first: the fastest suite of the JDK's provider here (docs/BENCHMARKS.md, "TLS"). */
    private static final String[] SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"};
    /** The first byte of a TLS record carrying a handshake. */
    private static final int TLS_HANDSHAKE = 0x16;

    private final Transport plain;
    private final SSLSocketFactory factory;
    private final String peerName;
    private final boolean offerSealed;
    private final AtomicLong sealedChannels = new AtomicLong();
    private final AtomicLong recordChannels = new AtomicLong();

    private PeerTls(final Transport plain, final SSLContext context, final String peerName, final boolean offerSealed)
    {
        this.plain = plain;
        this.factory = context.getSocketFactory();
        this.peerName = peerName;
        this.offerSealed = offerSealed;
        if (offerSealed)
        {
            SealedChunks.warmUp();
        }
    }

    /**
     * Loads the PEM files: {@code ca} (one or more CA certificates), {@code cert} (this host's certificate, chain
     * allowed) and {@code key} (its private key: PKCS#8, or SEC1/PKCS#1 as openssl writes them). Errors name the
     * file and what is wrong with it. Channels carry their data in sealed chunks after the handshake when the peer
     * agrees (both offer it), else in TLS records.
     */
    public static PeerTls load(final Transport plain, final Path ca, final Path cert, final Path key, final String peerName)
        throws IOException
    {
        return load(plain, ca, cert, key, peerName, true);
    }

    /** As above; {@code offerSealed} false: TLS records only (as builds before sealed chunks do). */
    public static PeerTls load(final Transport plain, final Path ca, final Path cert, final Path key, final String peerName,
        final boolean offerSealed) throws IOException
    {
        return new PeerTls(plain, context("TLSv1.3", ca, cert, key), peerName, offerSealed);
    }

    /**
     * An SSL context (protocol {@code protocol}, e.g. "TLSv1.3" or "TLS") that trusts only the certificates in
     * {@code ca} and presents {@code cert} with {@code key} (both null: no client certificate).
     */
    public static SSLContext context(final String protocol, final Path ca, final Path cert, final Path key)
        throws IOException
    {
        try
        {
            final List<X509Certificate> anchors = certificates(ca);
            final KeyStore trust = KeyStore.getInstance("PKCS12");
            trust.load(null, null);
            for (int i = 0; i < anchors.size(); i++)
            {
                trust.setCertificateEntry("ca-" + i, anchors.get(i));
            }
            KeyManager[] keyManagers = null;
            if (cert != null)
            {
                final List<X509Certificate> chain = certificates(cert);
                final PrivateKey privateKey = privateKey(key);
                final KeyStore own = KeyStore.getInstance("PKCS12");
                own.load(null, null);
                final char[] pw = "colod".toCharArray();
                if (!belongs(privateKey, chain.get(0)))
                {
                    throw new IOException(key + " does not belong to the certificate in " + cert);
                }
                own.setKeyEntry("host", privateKey, pw, chain.toArray(new Certificate[0]));
                final KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                kmf.init(own, pw);
                keyManagers = kmf.getKeyManagers();
            }
            final TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
            tmf.init(trust);
            final SSLContext ctx = SSLContext.getInstance(protocol);
            ctx.init(keyManagers, tmf.getTrustManagers(), null);
            return ctx;
        }
        catch (final GeneralSecurityException ex)
        {
            throw new IOException("TLS setup failed: " + ex.getMessage(), ex);
        }
    }

    /** Whether {@code key} signs what {@code cert}'s public key verifies. */
    private static boolean belongs(final PrivateKey key, final X509Certificate cert) throws GeneralSecurityException
    {
        final String alg = "EC".equals(key.getAlgorithm()) ? "SHA256withECDSA" : "SHA256with" + key.getAlgorithm();
        final Signature sign = Signature.getInstance(alg);
        final byte[] probe = "colod".getBytes(StandardCharsets.US_ASCII);
        try
        {
            sign.initSign(key);
            sign.update(probe);
            final byte[] sig = sign.sign();
            final Signature verify = Signature.getInstance(alg);
            verify.initVerify(cert.getPublicKey());
            verify.update(probe);
            return verify.verify(sig);
        }
        catch (final InvalidKeyException ex)
        {
            return false;
        }
    }

    private static List<X509Certificate> certificates(final Path file) throws IOException, GeneralSecurityException
    {
        final byte[] bytes = read(file);
        final Collection<? extends Certificate> all;
        try
        {
            all = CertificateFactory.getInstance("X.509").generateCertificates(new ByteArrayInputStream(bytes));
        }
        catch (final CertificateException ex)
        {
            throw new IOException(file + ": not a PEM certificate file: " + ex.getMessage(), ex);
        }
        if (all.isEmpty())
        {
            throw new IOException(file + ": no certificate in it");
        }
        final List<X509Certificate> out = new ArrayList<>();
        for (final Certificate c : all)
        {
            out.add((X509Certificate)c);
        }
        return out;
    }

    private static PrivateKey privateKey(final Path file) throws IOException
    {
        try (Reader r = Files.newBufferedReader(file); PEMParser p = new PEMParser(r))
        {
            final Object o = p.readObject();
            final JcaPEMKeyConverter conv = new JcaPEMKeyConverter();
            if (o instanceof PrivateKeyInfo info)
            {
                return conv.getPrivateKey(info);
            }
            if (o instanceof PEMKeyPair pair)
            {
                return conv.getKeyPair(pair).getPrivate();
            }
            throw new IOException(file + ": no unencrypted private key in it (found " +
                (o == null ? "nothing" : o.getClass().getSimpleName()) + ")");
        }
        catch (final NoSuchFileException ex)
        {
            throw new IOException(file + ": no such file", ex);
        }
    }

    private static byte[] read(final Path file) throws IOException
    {
        try
        {
            return Files.readAllBytes(file);
        }
        catch (final NoSuchFileException ex)
        {
            throw new IOException(file + ": no such file", ex);
        }
    }

    /** The name the peer's certificate must carry. */
    public String peerName()
    {
        return peerName;
    }

    /** For {@code coloctl status}: the peer, and how the channels secured so far carry their data. */
    public String describe()
    {
        return "mutual TLS 1.3, peer " + peerName + "; channels so far: " + sealedChannels.get() + " in sealed chunks, " +
            recordChannels.get() + " in TLS records" + (offerSealed ? "" : " (sealed-chunks: false)");
    }

    /** Channels secured so far whose data went in sealed chunks. */
    public long sealedChannels()
    {
        return sealedChannels.get();
    }

    /** Channels secured so far whose data went in TLS records (the peer did not offer sealed chunks, or this side). */
    public long recordChannels()
    {
        return recordChannels.get();
    }

    @Override
    public Socket newSocket() throws IOException
    {
        return plain.newSocket();
    }

    @Override
    public ServerSocket newServerSocket() throws IOException
    {
        return plain.newServerSocket();
    }

    @Override
    public Socket secureClient(final Socket connected) throws IOException
    {
        final SSLSocket s = (SSLSocket)factory.createSocket(connected, connected.getInetAddress().getHostAddress(),
            connected.getPort(), true);
        s.setUseClientMode(true);
        s.setEnabledProtocols(PROTOCOLS);
        s.setEnabledCipherSuites(SUITES);
        offer(s);
        handshake(s, connected);
        return agreed(s, connected, true);
    }

    @Override
    public Socket secureServer(final Socket accepted) throws IOException
    {
        final InputStream in = accepted.getInputStream();
        final int first = in.read();
        if (first < 0)
        {
            throw new EOFException("closed before the TLS handshake");
        }
        if (first != TLS_HANDSHAKE)
        {
            throw new AuthenticationException(who(accepted), first == 'C'
                ? "plaintext colod HELLO on a TLS port (the peer runs with insecure: true?)"
                : "not a TLS handshake (first byte 0x" + Integer.toHexString(first) + ")");
        }
        final SSLSocket s = (SSLSocket)factory.createSocket(accepted, new ByteArrayInputStream(new byte[]{(byte)first}), true);
        s.setUseClientMode(false);
        s.setNeedClientAuth(true);
        s.setEnabledProtocols(PROTOCOLS);
        s.setEnabledCipherSuites(SUITES);
        final SSLParameters p = s.getSSLParameters();
        p.setUseCipherSuitesOrder(true);
        s.setSSLParameters(p);
        offer(s);
        handshake(s, accepted);
        return agreed(s, accepted, false);
    }

    /**
     * Offers sealed chunks as an ALPN protocol: a client lists it, a server selects it when the client listed it. A
     * peer that does not know it neither lists nor selects it (a server without ALPN ignores the client's list), so
     * both ends keep TLS records (PROTOCOL.md section 11).
     */
    private void offer(final SSLSocket s)
    {
        if (offerSealed)
        {
            final SSLParameters p = s.getSSLParameters();
            p.setApplicationProtocols(new String[]{SealedSocket.ALPN});
            s.setSSLParameters(p);
        }
    }

    /** The channel after the handshake: in sealed chunks if both ends agreed on them, else the TLS socket itself. */
    private Socket agreed(final SSLSocket s, final Socket plainSocket, final boolean opener) throws IOException
    {
        if (SealedSocket.ALPN.equals(s.getApplicationProtocol()))
        {
            final Socket sealed = SealedSocket.over(s, plainSocket, opener);
            sealedChannels.incrementAndGet();
            return sealed;
        }
        recordChannels.incrementAndGet();
        return s;
    }

    private void handshake(final SSLSocket s, final Socket plainSocket) throws IOException
    {
        try
        {
            s.startHandshake();
        }
        catch (final SSLException ex)
        {
            throw new AuthenticationException(who(plainSocket), "TLS handshake failed: " + rootMessage(ex));
        }
        final List<String> names;
        try
        {
            names = names((X509Certificate)s.getSession().getPeerCertificates()[0]);
        }
        catch (final SSLPeerUnverifiedException ex)
        {
            throw new AuthenticationException(who(plainSocket), "the peer presented no certificate");
        }
        if (!names.contains(peerName))
        {
            throw new AuthenticationException(who(plainSocket), "the peer's certificate names " + names +
                ", not the configured peer " + peerName);
        }
    }

    private static String who(final Socket s)
    {
        return s.getInetAddress().getHostAddress() + ":" + s.getPort();
    }

    private static String rootMessage(final Throwable t)
    {
        Throwable c = t;
        final StringBuilder b = new StringBuilder(String.valueOf(t.getMessage()));
        while (c.getCause() != null && c.getCause() != c)
        {
            c = c.getCause();
            if (c.getMessage() != null && !b.toString().contains(c.getMessage()))
            {
                b.append(": ").append(c.getMessage());
            }
        }
        return b.toString();
    }

    /**
     * The names a certificate is valid for (RFC 6125, 6.4.4): its DNS and IP subject alternative names; the CN only
     * when it has no name of either kind. A CN that matches beside non-matching alternative names does not count.
     */
    static List<String> names(final X509Certificate c) throws IOException
    {
        final List<String> out = new ArrayList<>();
        try
        {
            final Collection<List<?>> sans = c.getSubjectAlternativeNames();
            if (sans != null)
            {
                for (final List<?> san : sans)
                {
                    final int type = (Integer)san.get(0);
                    if (type == 2 || type == 7)
                    {
                        out.add(String.valueOf(san.get(1)));
                    }
                }
            }
        }
        catch (final CertificateParsingException ex)
        {
            throw new IOException("unreadable subject alternative names: " + ex.getMessage(), ex);
        }
        if (!out.isEmpty())
        {
            return out;
        }
        final String dn = c.getSubjectX500Principal().getName();
        for (final String part : dn.split(","))
        {
            if (part.startsWith("CN="))
            {
                out.add(part.substring(3));
            }
        }
        return out;
    }
}
