package dev.colod.core.protocol;

import java.io.IOException;

/** A peer was refused before any VM state moved: no or a bad certificate, the wrong name, plaintext on TLS. */
public final class AuthenticationException extends IOException
{
    private final String peer;

    public AuthenticationException(final String peer, final String reason)
    {
        super("peer " + peer + " refused: " + reason);
        this.peer = peer;
    }

    public String peer()
    {
        return peer;
    }
}
