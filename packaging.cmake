# SPDX-License-Identifier: MIT
# The Debian package of ringecho, built by `cmake --build DIR --target package`
# (README, "Install", has the commands).  It holds what `cmake --install`
# installs, at the same paths: the binary in /usr/sbin, the units where the
# local systemd looks, the man pages, and /etc/ringecho/ringechod.conf
# (RINGECHO_CONFDIR) as a conffile.  packaging/ holds the rest:
#   check.cmake.in     refuses a package that would be wrong (prefix not /usr,
#                      no dpkg-shlibdeps, no maintainer, a sanitizer build);
#   prebuild.cmake.in  strips, compresses, writes copyright and changelog;
#   postinst.in, prerm.in, postrm.in  the maintainer scripts.

if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
	message(STATUS "packaging: CMAKE_INSTALL_PREFIX is ${CMAKE_INSTALL_PREFIX}; "
		"the package target needs -DCMAKE_INSTALL_PREFIX=/usr")
endif()

set(RINGECHO_DEB_MAINTAINER "" CACHE STRING
	"Maintainer field of the Debian package, \"Name <address>\": whoever answers for it")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ringecho)
set(CPACK_PACKAGE_VENDOR ringecho)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION} (RFC 862)")
# The package installs what `cmake --install` installs, at the same paths,
# so the unit's ExecStart= and the daemon's default config path hold.
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
# prebuild.cmake.in strips, as dh_strip does (.comment too).
set(CPACK_STRIP_FILES OFF)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${RINGECHO_DEB_MAINTAINER}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# ExecReload= in ringechod.service runs /bin/kill; shlibdeps adds the
# libraries.  deb-systemd-helper and deb-systemd-invoke, which the maintainer
# scripts call, are in init-system-helpers: Essential, so not listed.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "procps")
# The first line of the Description is CPACK_PACKAGE_DESCRIPTION_SUMMARY.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION [=[ringechod echoes back every byte a TCP client sends, serving many
connections from one event loop on a Linux io_uring instance with a ring
of provided receive buffers. It bounds what each client can make it
buffer, limits connections overall and per address, drains gracefully on
SIGTERM and reloads its configuration on SIGHUP. Asked to, it also
echoes UDP datagrams, refusing to be used to bounce or reflect traffic.
.
It runs as a sandboxed systemd service with no privileges, either
socket activated on port 7 (ringechod.socket, IPv4 and IPv6) or binding
the addresses of /etc/ringecho/ringechod.conf (ringechod.service).
Nothing is enabled on installation. The units are named after the
daemon: systemctl status ringechod.]=])

set(RINGECHO_DEB_CONTROL ${PROJECT_BINARY_DIR}/debian-control)
set(RINGECHO_DEB_UNITS "ringechod.service ringechod.socket")
file(CONFIGURE OUTPUT ${RINGECHO_DEB_CONTROL}/conffiles @ONLY CONTENT
"${RINGECHO_CONFDIR}/ringechod.conf
")
foreach(script postinst prerm postrm)
	configure_file(packaging/${script}.in ${RINGECHO_DEB_CONTROL}/${script} @ONLY)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
	${RINGECHO_DEB_CONTROL}/conffiles
	${RINGECHO_DEB_CONTROL}/postinst
	${RINGECHO_DEB_CONTROL}/prerm
	${RINGECHO_DEB_CONTROL}/postrm)
# 0755 for the scripts, 0644 for conffiles, as dpkg and lintian expect.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

configure_file(packaging/check.cmake.in packaging-check.cmake @ONLY)
set(CPACK_PROJECT_CONFIG_FILE ${PROJECT_BINARY_DIR}/packaging-check.cmake)
configure_file(packaging/prebuild.cmake.in packaging-prebuild.cmake @ONLY)
set(CPACK_PRE_BUILD_SCRIPTS ${PROJECT_BINARY_DIR}/packaging-prebuild.cmake)

include(CPack)
