with month as (
    select cast(date_trunc('month', max(day)) as date) as month_start
    from {{ ref('fleet_daily') }}
),

{{ vehicle_names() }}

select
    vehicle_id,
    display_name,
    strftime(month.month_start, '%Y-%m') as month,
    count(*) as days_driven,
    round(sum(driving_s) / 3600, 1) as driving_h,
    round(sum(idle_s) / 3600, 1) as idle_h,
    round(100 * sum(idle_s) / nullif(sum(driving_s) + sum(idle_s), 0), 1) as idle_pct
from {{ ref('fleet_daily') }}
cross join month
join names using (vehicle_id)
where fleet_daily.day >= month.month_start
    and fleet_daily.day < month.month_start + interval 1 month
group by vehicle_id, display_name, month.month_start
order by idle_pct desc, vehicle_id
