# SPDX-License-Identifier: MIT
# A Debian package of ringecho, built with `cpack` (or `cmake --build . -t package`)
# from a build configured with -DCMAKE_INSTALL_PREFIX=/usr: the binary in
# /usr/sbin, the units where the local systemd looks, the man pages, and
# /etc/ringecho/ringechod.conf (RINGECHO_CONFDIR) as a conffile.  Dependencies come from dpkg-shlibdeps, so
# building it needs dpkg-dev.

if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
	message(STATUS "packaging: CMAKE_INSTALL_PREFIX is ${CMAKE_INSTALL_PREFIX}; "
		"a Debian package wants -DCMAKE_INSTALL_PREFIX=/usr")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ringecho)
set(CPACK_PACKAGE_VENDOR ringecho)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION} (RFC 862)")
# The package installs what `cmake --install` installs, at the same paths,
# so ExecStart= in the unit and the daemon's default config path hold.
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)

set(RINGECHO_DEB_MAINTAINER "ringecho maintainers <ringecho@localhost>" CACHE STRING
	"Maintainer field of the Debian package")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${RINGECHO_DEB_MAINTAINER}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# ExecReload= in ringechod.service runs /bin/kill; shlibdeps adds the libraries.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "procps")
# The first line of the Description is CPACK_PACKAGE_DESCRIPTION_SUMMARY.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION [=[ringechod echoes back every byte a TCP client sends, serving many
connections from one event loop on a Linux io_uring instance with a ring
of provided receive buffers. It bounds what each client can make it
buffer, limits connections overall and per address, drains gracefully on
SIGTERM and reloads its configuration on SIGHUP.
.
It runs as a sandboxed systemd service with no privileges, either
socket activated on port 7 (ringechod.socket, IPv4 and IPv6) or binding
the addresses of /etc/ringecho/ringechod.conf. Nothing is enabled on
installation.]=])

# Maintainer scripts and the conffiles list, generated into the build tree.
set(RINGECHO_DEB_CONTROL ${PROJECT_BINARY_DIR}/debian-control)
set(RINGECHO_DEB_UNITS "ringechod.service ringechod.socket")

file(CONFIGURE OUTPUT ${RINGECHO_DEB_CONTROL}/conffiles @ONLY CONTENT
"${RINGECHO_CONFDIR}/ringechod.conf
")

# configure: make systemd see new or changed units.  A first install starts
# nothing (the administrator picks the socket on port 7 or the service on the
# config's addresses); an upgrade restarts a running daemon onto the new binary.
file(CONFIGURE OUTPUT ${RINGECHO_DEB_CONTROL}/postinst @ONLY CONTENT [=[#!/bin/sh
set -e
case "$1" in
configure)
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			systemctl try-restart ringechod.service >/dev/null || true
		fi
	fi
	;;
esac
exit 0
]=])

# remove: stop the daemon and its sockets before the files go.  An upgrade
# keeps it running; postinst restarts it.
file(CONFIGURE OUTPUT ${RINGECHO_DEB_CONTROL}/prerm @ONLY CONTENT [=[#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop @RINGECHO_DEB_UNITS@ >/dev/null 2>&1 || true
fi
exit 0
]=])

# remove: forget the units.  purge: also drop the enablement symlinks that
# `systemctl enable` made (a plain remove keeps them, so a reinstall comes
# back as the administrator left it); dpkg itself purges the conffile.
file(CONFIGURE OUTPUT ${RINGECHO_DEB_CONTROL}/postrm @ONLY CONTENT [=[#!/bin/sh
set -e
case "$1" in
purge)
	for unit in @RINGECHO_DEB_UNITS@; do
		rm -f /etc/systemd/system/*.wants/"$unit" /etc/systemd/system/*.requires/"$unit"
	done
	;;
esac
case "$1" in
remove|purge)
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
	fi
	;;
esac
exit 0
]=])

set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
	${RINGECHO_DEB_CONTROL}/conffiles
	${RINGECHO_DEB_CONTROL}/postinst
	${RINGECHO_DEB_CONTROL}/prerm
	${RINGECHO_DEB_CONTROL}/postrm)
# 0755 for the scripts, 0644 for conffiles, as dpkg and lintian expect.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
