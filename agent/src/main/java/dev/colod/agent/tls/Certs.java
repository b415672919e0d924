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
 * A small certificate authority ({@code coloctl certs}): ECDSA P-256, SHA-256, host certificates for both TLS client
 * and server use with the host's name or address as subject alternative name, issued by a new CA or by an existing
 * one read from PEM files (EC or RSA). colod itself only reads PEM files.
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

    /**
     * An existing CA from {@code dir}: {@code name}.pem (its certificate) and {@code name}.key (its private key: PKCS#8,
     * or a traditional EC or RSA key), to issue more host certificates (a replacement standby host). Refuses, naming
     * the file, a missing key, a certificate that is not a CA, or a key that is not the certificate's.
     */
    public static Issued readAuthority(final Path dir, final String name) throws GeneralSecurityException, IOException
    {
        final Path certFile = dir.resolve(name + ".pem");
        final Path keyFile = dir.resolve(name + ".key");
        if (!Files.isReadable(keyFile))
        {
            throw new IOException(certFile + " exists but its key " + keyFile + " does not: a CA cannot sign without it");
        }
        final X509Certificate cert;
        try (org.bouncycastle.openssl.PEMParser p = new org.bouncycastle.openssl.PEMParser(Files.newBufferedReader(certFile)))
        {
            final Object o = p.readObject();
            if (!(o instanceof X509CertificateHolder h))
            {
                throw new IOException(certFile + " holds no certificate");
            }
            cert = new JcaX509CertificateConverter().getCertificate(h);
        }
        if (cert.getBasicConstraints() < 0)
        {
            throw new IOException(certFile + " is not a CA certificate (no basicConstraints CA:true)");
        }
        final java.security.PrivateKey key;
        try (org.bouncycastle.openssl.PEMParser p = new org.bouncycastle.openssl.PEMParser(Files.newBufferedReader(keyFile)))
        {
            final Object o = p.readObject();
            final org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter c = new org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter();
            if (o instanceof org.bouncycastle.asn1.pkcs.PrivateKeyInfo info)
            {
                key = c.getPrivateKey(info);
            }
            else if (o instanceof org.bouncycastle.openssl.PEMKeyPair pair)
            {
                key = c.getKeyPair(pair).getPrivate();
            }
            else
            {
                throw new IOException(keyFile + " holds no unencrypted private key (PKCS#8, EC or RSA PEM)");
            }
        }
        final Issued ca = new Issued(new KeyPair(cert.getPublicKey(), key), cert);
        // the key must be the certificate's: sign something and check it with the certificate's public key
        final java.security.Signature sig = java.security.Signature.getInstance(algorithm(key));
        sig.initSign(key);
        sig.update(new byte[]{1, 2, 3});
        final byte[] signed = sig.sign();
        sig.initVerify(cert.getPublicKey());
        sig.update(new byte[]{1, 2, 3});
        if (!sig.verify(signed))
        {
            throw new IOException(keyFile + " is not the key of " + certFile);
        }
        return ca;
    }

    /** The signature algorithm for a CA key: ECDSA or RSA with SHA-256. */
    private static String algorithm(final java.security.PrivateKey key)
    {
        return "RSA".equals(key.getAlgorithm()) ? "SHA256withRSA" : "SHA256withECDSA";
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
            final X509CertificateHolder h = b.build(new JcaContentSignerBuilder(algorithm(signer.getPrivate()))
                .build(signer.getPrivate()));
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
