package dev.colod.agent.tls;

import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.GeneralName;
import org.bouncycastle.asn1.x509.GeneralNames;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cert.jcajce.JcaX509v3CertificateBuilder;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.junit.jupiter.api.Test;

import java.math.BigInteger;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.cert.X509Certificate;
import java.time.Instant;
import java.util.Date;

import static org.assertj.core.api.Assertions.assertThat;

/** Which names of a certificate count for the peer check (docs/PROTOCOL.md, section 1): RFC 6125's rule. */
class PeerNamesTest
{
    private static X509Certificate cert(final String cn, final GeneralName... sans) throws Exception
    {
        final KeyPairGenerator g = KeyPairGenerator.getInstance("EC");
        g.initialize(256);
        final KeyPair key = g.generateKeyPair();
        final Instant now = Instant.now();
        final JcaX509v3CertificateBuilder b = new JcaX509v3CertificateBuilder(new X500Name("CN=" + cn), BigInteger.TEN,
            Date.from(now.minusSeconds(60)), Date.from(now.plusSeconds(600)), new X500Name("CN=" + cn), key.getPublic());
        if (sans.length > 0)
        {
            b.addExtension(Extension.subjectAlternativeName, false, new GeneralNames(sans));
        }
        return new JcaX509CertificateConverter().getCertificate(b.build(
            new JcaContentSignerBuilder("SHA256withECDSA").build(key.getPrivate())));
    }

    @Test
    void aCnBesideNonMatchingAlternativeNamesDoesNotCount() throws Exception
    {
        final X509Certificate c = cert("198.19.0.1", new GeneralName(GeneralName.dNSName, "other.example"));
        assertThat(PeerTls.names(c)).containsExactly("other.example").doesNotContain("198.19.0.1");
    }

    @Test
    void alternativeNamesOfBothKindsCount() throws Exception
    {
        final X509Certificate c = cert("x", new GeneralName(GeneralName.dNSName, "a.example"),
            new GeneralName(GeneralName.iPAddress, "198.19.0.1"));
        assertThat(PeerTls.names(c)).containsExactlyInAnyOrder("a.example", "198.19.0.1");
    }

    @Test
    void theCnCountsOnlyWithoutAlternativeNames() throws Exception
    {
        assertThat(PeerTls.names(cert("host-a"))).containsExactly("host-a");
    }
}
