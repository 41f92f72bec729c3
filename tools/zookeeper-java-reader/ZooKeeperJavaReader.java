/*
 * The ZooKeeper interop reader of the test bed: reads kube-registrar's ZooKeeper entries the way
 * consumers nobody here wrote do, and prints what they see as JSON lines on stdout.
 *
 *   curator  CONNECT BASE_PATH SERVICE PAYLOAD   Curator x-discovery's ServiceDiscovery<P>.queryForInstances,
 *                                                with P = ZookeeperInstance (PAYLOAD spring, as Spring Cloud
 *                                                Zookeeper reads), Object (object) or Void (void)
 *   spring   CONNECT BASE_PATH SERVICE           as `curator ... spring`, then Spring's own ZookeeperServiceInstance
 *                                                adapter (what a DiscoveryClient hands to an application)
 *   services CONNECT BASE_PATH                   ServiceDiscovery.queryForNames: the services under BASE_PATH
 *   hostport CONNECT SERVICE_PATH                a plain org.apache.zookeeper.ZooKeeper client: getChildren,
 *                                                then getData of each child, printed as strings
 *
 * BASE_PATH is Curator's basePath (Spring's spring.cloud.zookeeper.discovery.root). A failure is
 * printed on stderr as `zookeeper-java-reader: <mode>: <exception class>: <message>` (with its
 * causes), exit status 1; wrong arguments give exit status 2.
 */

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryNTimes;
import org.apache.curator.x.discovery.ServiceDiscovery;
import org.apache.curator.x.discovery.ServiceDiscoveryBuilder;
import org.apache.curator.x.discovery.ServiceInstance;
import org.apache.curator.x.discovery.details.JsonInstanceSerializer;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;
import org.springframework.cloud.zookeeper.discovery.ZookeeperInstance;
import org.springframework.cloud.zookeeper.discovery.ZookeeperServiceInstance;

public final class ZooKeeperJavaReader {
  // Generous for a loaded machine; a run against a healthy local server takes well under a second.
  private static final int SESSION_TIMEOUT_MS = 15_000;
  private static final int CONNECT_TIMEOUT_S = 30;
  private static final ObjectMapper JSON = new ObjectMapper();

  private ZooKeeperJavaReader() {}

  public static void main(String[] args) {
    String mode = args.length > 0 ? args[0] : "";
    try {
      switch (mode) {
        case "curator":
          need(args, 5);
          curator(args[1], args[2], args[3], payloadClass(args[4]), false);
          break;
        case "spring":
          need(args, 4);
          curator(args[1], args[2], args[3], ZookeeperInstance.class, true);
          break;
        case "services":
          need(args, 3);
          services(args[1], args[2]);
          break;
        case "hostport":
          need(args, 3);
          hostport(args[1], args[2]);
          break;
        default:
          throw new UsageError("unknown mode " + (mode.isEmpty() ? "(none)" : "'" + mode + "'"));
      }
    } catch (UsageError e) {
      System.err.println("zookeeper-java-reader: " + e.getMessage());
      System.err.println("usage: zookeeper-java-reader curator CONNECT BASE_PATH SERVICE spring|object|void");
      System.err.println("       zookeeper-java-reader spring CONNECT BASE_PATH SERVICE");
      System.err.println("       zookeeper-java-reader services CONNECT BASE_PATH");
      System.err.println("       zookeeper-java-reader hostport CONNECT SERVICE_PATH");
      System.exit(2);
    } catch (Throwable e) { // NoClassDefFoundError too: a classpath problem must say so on stderr
      StringBuilder message = new StringBuilder("zookeeper-java-reader: " + mode + ": " + e);
      for (Throwable cause = e.getCause(); cause != null; cause = cause.getCause()) message.append("\n  caused by: ").append(cause);
      System.err.println(message);
      System.exit(1);
    }
    System.exit(0);
  }

  private static final class UsageError extends Exception {
    private static final long serialVersionUID = 1L;

    UsageError(String message) {
      super(message);
    }
  }

  private static void need(String[] args, int count) throws UsageError {
    if (args.length != count) throw new UsageError(args[0] + " takes " + (count - 1) + " arguments, got " + (args.length - 1));
  }

  private static Class<?> payloadClass(String payload) throws UsageError {
    switch (payload) {
      case "spring":
        return ZookeeperInstance.class;
      case "object":
        return Object.class;
      case "void":
        return Void.class;
      default:
        throw new UsageError("unknown payload '" + payload + "': use spring, object or void");
    }
  }

  private static CuratorFramework startCurator(String connect) throws Exception {
    CuratorFramework client = CuratorFrameworkFactory.newClient(connect, SESSION_TIMEOUT_MS, SESSION_TIMEOUT_MS, new RetryNTimes(2, 500));
    client.start();
    if (!client.blockUntilConnected(CONNECT_TIMEOUT_S, TimeUnit.SECONDS)) {
      client.close();
      throw new IllegalStateException("could not connect to ZooKeeper at " + connect + " within " + CONNECT_TIMEOUT_S + " s");
    }
    return client;
  }

  /** Builds discovery exactly as Spring Cloud Zookeeper does, with the payload class P. */
  private static <P> ServiceDiscovery<P> discovery(CuratorFramework client, String basePath, Class<P> payload) throws Exception {
    ServiceDiscovery<P> discovery = ServiceDiscoveryBuilder.builder(payload)
        .client(client)
        .basePath(basePath)
        .serializer(new JsonInstanceSerializer<>(payload))
        .build();
    discovery.start();
    return discovery;
  }

  private static <P> void curator(String connect, String basePath, String service, Class<P> payload, boolean springAdapter)
      throws Exception {
    try (CuratorFramework client = startCurator(connect); ServiceDiscovery<P> discovery = discovery(client, basePath, payload)) {
      for (ServiceInstance<P> instance : sorted(discovery.queryForInstances(service))) {
        if (springAdapter) {
          @SuppressWarnings("unchecked")
          ServiceInstance<ZookeeperInstance> typed = (ServiceInstance<ZookeeperInstance>) instance;
          printSpring(new ZookeeperServiceInstance(service, typed));
        } else {
          printCurator(instance);
        }
      }
    }
  }

  private static <P> List<ServiceInstance<P>> sorted(Collection<ServiceInstance<P>> instances) {
    List<ServiceInstance<P>> list = new ArrayList<>(instances);
    list.sort((a, b) -> a.getId().compareTo(b.getId()));
    return list;
  }

  private static void printCurator(ServiceInstance<?> instance) throws Exception {
    Object payload = instance.getPayload();
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("id", instance.getId());
    line.put("name", instance.getName());
    line.put("address", instance.getAddress());
    line.put("port", instance.getPort());
    line.put("sslPort", instance.getSslPort());
    line.put("serviceType", String.valueOf(instance.getServiceType()));
    line.put("registrationTimeUTC", instance.getRegistrationTimeUTC());
    line.put("enabled", instance.isEnabled());
    line.put("uri", instance.buildUriSpec());
    line.put("payloadClass", payload == null ? null : payload.getClass().getName());
    line.put("metadata", metadataOf(payload));
    System.out.println(JSON.writeValueAsString(line));
  }

  /** The payload's metadata: Spring's class, or the `metadata` key of a payload read as a Map. */
  private static Object metadataOf(Object payload) {
    if (payload instanceof ZookeeperInstance) return ((ZookeeperInstance) payload).getMetadata();
    if (payload instanceof Map) return ((Map<?, ?>) payload).get("metadata");
    return null;
  }

  private static void printSpring(ZookeeperServiceInstance instance) throws Exception {
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("serviceId", instance.getServiceId());
    line.put("host", instance.getHost());
    line.put("port", instance.getPort());
    line.put("secure", instance.isSecure());
    line.put("uri", String.valueOf(instance.getUri()));
    line.put("metadata", instance.getMetadata());
    line.put("id", instance.getServiceInstance().getId());
    System.out.println(JSON.writeValueAsString(line));
  }

  private static void services(String connect, String basePath) throws Exception {
    try (CuratorFramework client = startCurator(connect); ServiceDiscovery<Object> discovery = discovery(client, basePath, Object.class)) {
      List<String> names = new ArrayList<>(discovery.queryForNames());
      Collections.sort(names);
      System.out.println(JSON.writeValueAsString(Collections.singletonMap("services", names)));
    }
  }

  /** What a hand-written client does: list the service node's children, read each one's data. */
  private static void hostport(String connect, String servicePath) throws Exception {
    CountDownLatch connected = new CountDownLatch(1);
    ZooKeeper zk = new ZooKeeper(connect, SESSION_TIMEOUT_MS, event -> {
      if (event.getState() == Watcher.Event.KeeperState.SyncConnected) connected.countDown();
    });
    try {
      if (!connected.await(CONNECT_TIMEOUT_S, TimeUnit.SECONDS))
        throw new IllegalStateException("could not connect to ZooKeeper at " + connect + " within " + CONNECT_TIMEOUT_S + " s");
      List<String> children = new ArrayList<>(zk.getChildren(servicePath, false));
      Collections.sort(children);
      String prefix = servicePath.endsWith("/") ? servicePath : servicePath + "/";
      for (String child : children) {
        byte[] data;
        try {
          data = zk.getData(prefix + child, false, null);
        } catch (KeeperException.NoNodeException gone) {
          continue; // deleted between the listing and the read: a real client skips it too
        }
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("node", child);
        line.put("data", data == null ? null : new String(data, StandardCharsets.UTF_8));
        System.out.println(JSON.writeValueAsString(line));
      }
    } finally {
      zk.close();
    }
  }
}
