package dev.colod.agent.tls;

import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x509.BasicConstraints;
import org.bouncycastle.asn1.x509.ExtendedKeyUsage;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.GeneralName;
import org.bouncycastle.asn1.x509.GeneralNames;
import org.bouncycastle.asn1.x509.KeyPurposeId;
import org.bouncycastle.asn1.x509.KeyUsage;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cert.jcajce.JcaX509v3CertificateBuilder;
import org.bouncycastle.openssl.jcajce.JcaPEMWriter;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;

import java.io.IOException;
import java.io.StringWriter;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.SecureRandom;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;
import java.time.Duration;
import java.time.Instant;
import java.util.Date;
import java.util.regex.Pattern;

/**
 * A small certificate authority for labs, the demo and tests ({@code coloctl certs}): ECDSA P-256, SHA-256,
 * host certificates for both TLS client and server use with the host's name or address as subject alternative
 * name. Production hosts get their certificates from the operator's CA; colod only reads PEM files.
 */
public final class Certs
{
    private static final Pattern IPV4 = Pattern.compile("\\d{1,3}(\\.\\d{1,3}){3}");

    /** A key and its certificate. */
    public record Issued(KeyPair key, X509Certificate cert)
    {
        /** Writes {@code name}.pem (certificate) and {@code name}.key (PKCS#8 key, mode 0600) into {@code dir}. */
        public void write(final Path dir, final String name) throws IOException
        {
            Files.createDirectories(dir);
            Files.writeString(dir.resolve(name + ".pem"), pem(cert));
            final Path key = dir.resolve(name + ".key");
            Files.deleteIfExists(key);
            Files.createFile(key, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            Files.writeString(key, pem(new org.bouncycastle.openssl.jcajce.JcaPKCS8Generator(this.key.getPrivate(), null)));
        }
    }

    private Certs()
    {
    }

    private static KeyPair newKey() throws GeneralSecurityException
    {
        final KeyPairGenerator g = KeyPairGenerator.getInstance("EC");
        g.initialize(new ECGenParameterSpec("secp256r1"), new SecureRandom());
        return g.generateKeyPair();
    }

    /** A self-signed CA certificate valid from now for {@code validity}. */
    public static Issued authority(final String name, final Duration validity) throws GeneralSecurityException, IOException
    {
        final KeyPair key = newKey();
        final Instant now = Instant.now();
        final X500Name subject = new X500Name("CN=" + name);
        final JcaX509v3CertificateBuilder b = new JcaX509v3CertificateBuilder(subject, serial(), Date.from(now.minusSeconds(60)),
            Date.from(now.plus(validity)), subject, key.getPublic());
        b.addExtension(Extension.basicConstraints, true, new BasicConstraints(0));
        b.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.keyCertSign | KeyUsage.cRLSign));
        return new Issued(key, sign(b, key));
    }

    /**
     * A host certificate for {@code name} (its CN and subject alternative name: an IP address if it looks like one,
     * else a DNS name) signed by {@code ca}, valid from {@code notBefore} to {@code notAfter}.
     */
    public static Issued host(final Issued ca, final String name, final Instant notBefore, final Instant notAfter)
        throws GeneralSecurityException, IOException
    {
        final KeyPair key = newKey();
        final JcaX509v3CertificateBuilder b = new JcaX509v3CertificateBuilder(ca.cert(), serial(), Date.from(notBefore),
            Date.from(notAfter), new X500Name("CN=" + name), key.getPublic());
        b.addExtension(Extension.basicConstraints, true, new BasicConstraints(false));
        b.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.digitalSignature));
        b.addExtension(Extension.extendedKeyUsage, false,
            new ExtendedKeyUsage(new KeyPurposeId[]{KeyPurposeId.id_kp_serverAuth, KeyPurposeId.id_kp_clientAuth}));
        b.addExtension(Extension.subjectAlternativeName, false, new GeneralNames(
            new GeneralName(IPV4.matcher(name).matches() ? GeneralName.iPAddress : GeneralName.dNSName, name)));
        return new Issued(key, sign(b, ca.key()));
    }

    /** A host certificate valid from a minute ago for {@code validity}. */
    public static Issued host(final Issued ca, final String name, final Duration validity)
        throws GeneralSecurityException, IOException
    {
        final Instant now = Instant.now();
        return host(ca, name, now.minusSeconds(60), now.plus(validity));
    }

    private static BigInteger serial()
    {
        return new BigInteger(64, new SecureRandom()).abs().add(BigInteger.ONE);
    }

    private static X509Certificate sign(final JcaX509v3CertificateBuilder b, final KeyPair signer)
        throws GeneralSecurityException
    {
        try
        {
            final X509CertificateHolder h = b.build(new JcaContentSignerBuilder("SHA256withECDSA").build(signer.getPrivate()));
            return new JcaX509CertificateConverter().getCertificate(h);
        }
        catch (final org.bouncycastle.operator.OperatorCreationException ex)
        {
            throw new GeneralSecurityException(ex);
        }
    }

    static String pem(final Object o) throws IOException
    {
        final StringWriter s = new StringWriter();
        try (JcaPEMWriter w = new JcaPEMWriter(s))
        {
            w.writeObject(o);
        }
        return s.toString();
    }
}
