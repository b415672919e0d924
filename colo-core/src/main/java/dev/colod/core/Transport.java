package dev.colod.core;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.Socket;

/**
 * Where the engines' TCP sockets come from. The default makes plain sockets in the agent's own network
 * namespace; the agent (or a test) may hand out sockets created elsewhere, e.g. inside a replication-network
 * namespace, or bound to a replication address.
 */
public interface Transport
{
    Transport DEFAULT = new Transport()
    {
    };

    /** An unconnected socket for the primary to connect with. */
    default Socket newSocket() throws IOException
    {
        return new Socket();
    }

    /** An unbound server socket for the secondary to listen on. */
    default ServerSocket newServerSocket() throws IOException
    {
        return new ServerSocket();
    }

    /**
     * The primary's connected socket as the channel it speaks on: with mutual TLS, the handshake is done and the
     * secondary's certificate checked against the configured peer before this returns.
     */
    default Socket secureClient(final Socket connected) throws IOException
    {
        return connected;
    }

    /** The secondary's accepted socket as the channel it listens on (TLS: handshake done, peer checked). */
    default Socket secureServer(final Socket accepted) throws IOException
    {
        return accepted;
    }
}
