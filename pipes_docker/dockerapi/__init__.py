"""The one layer that talks to docker-py (and the transport it hands back).

Everything above it works with the plain values of :mod:`pipes_docker.backend`,
:mod:`pipes_docker.container.engine` and :mod:`pipes_docker.swarm.engine`; errors leave this
package already translated into pipes-docker's own. docker-py's private API is used only in
:mod:`pipes_docker.dockerapi.private`.
"""
